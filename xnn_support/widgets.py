"""Interactive widgets for the notebooks (ipywidgets). Widget cells are tagged ``skip-execution``
so headless runs skip them; every widget computes through plain functions of the method modules and
draws through :mod:`xnn_support.viz`, so the static figures in normal cells show the same thing.
"""
from __future__ import annotations

from typing import Sequence
from IPython.display import display
import matplotlib.pyplot as plt
import ipywidgets as w
import torch
import math
from . import viz
from .core.capture import capture
from .papers.discarding import method as discarding
from .data import edit_faces
from .papers.semantic.experiments import explain_faces
from .papers.semantic.experiments import paste_mask
from .papers.graph import metrics as ge
from .papers.pointcloud.method import point_sigma, rodrigues
from .papers.decision_trees import metrics as dt_metrics
import numpy as np

__all__ = ["feature_explorer", "dataset_browser"]


def _show(fig):

    display(fig)
    plt.close(fig)


def feature_explorer(model, images, layers: Sequence[str], *, n_channels: int = 16):
    """Choose an image and a layer; see that layer's first channels (via ``capture``)."""


    def update(index=0, layer=layers[0]):
        with torch.no_grad(), capture(model, [layer]) as cap:
            cap.forward(images[index:index + 1])
        _show(viz.feature_maps(cap[layer][0], n=n_channels, title=f"{layer}, image {index}"))

    return w.interact(update, index=w.IntSlider(0, 0, len(images) - 1), layer=w.Dropdown(options=list(layers)))


def dataset_browser(ds, *, kind: str = "images"):
    """Page through a data set: ``kind`` is images | faces | clouds | sentences."""


    draw = {"images": lambda i: viz.image_grid(ds, range(i, min(i + 12, len(ds))), masks=True),
            "faces": lambda i: viz.face_grid(ds, range(i, min(i + 8, len(ds)))),
            "clouds": lambda i: viz.cloud_grid(ds, range(i, min(i + 8, len(ds)))),
            "sentences": lambda i: viz.sentence_table(ds, range(i, min(i + 6, len(ds))))}[kind]
    return w.interact(lambda start=0: _show(draw(start)), start=w.IntSlider(0, 0, max(0, len(ds) - 1), step=4))


# --- 05: knowledge consistency ---

__all__ += ["consistency_explorer"]


def consistency_explorer(images, layers, *, n_channels: int = 8):
    """Choose a layer, a part (x_B, an order, the residual) and an image; see the part's energy map
    over the image, all parts on one scale, and its first channels.

    ``layers``: ``{name: (feat_b, decomposition)}`` with held-out features of B and their
    :class:`~xnn_support.consistency.Decomposition`, or ``{name: decomposition}`` (x_B is then the sum
    of its parts), e.g. ``row["eval"]`` of
    :func:`~xnn_support.consistency_experiments.consistency_by_layer`), for ``images``.
    """


    names = list(layers)
    if not names:
        raise ValueError("layers is empty: pass {name: (feat_b, decomposition)} or {name: decomposition}")
    # a bare Decomposition carries x_B too: x_B = sum of its components + residual
    layers = {n: (v.g + v.residual, v) if hasattr(v, "components") else tuple(v) for n, v in layers.items()}
    k_max = len(layers[names[0]][1].components)
    options = ["x_B"] + [f"order {k}" for k in range(k_max)] + ["residual"]

    def update(layer=names[0], part="order 0", index=0):
        fb, dec = layers[layer]
        parts = {"x_B": fb[index]}
        parts.update({f"order {k}": c[index] for k, c in enumerate(dec.components)})
        parts["residual"] = dec.residual[index]
        _show(viz.component_view(images[index], parts, part if part in parts else "x_B",
                                 n_channels=n_channels, title=f"{layer}, image {index}"))

    return w.interact(update, layer=w.Dropdown(options=names), part=w.Dropdown(options=options, value="order 0"),
                      index=w.IntSlider(0, 0, len(images) - 1))


# --- 04: information discarding ---
def discarding_explorer(model, images, layers, *, fg_mask=None, grid: int = 8, steps: int = 60, samples: int = 4,
                        lams=(1.0, 3.0, 6.0), config: str = "clean", seed: int = 0):
    """Choose an image, a layer and lambda; see the pixel-wise entropy map of that layer
    (:func:`xnn_support.discarding.pixel_information`, all layers optimised at once and cached per
    (image, lambda); a few seconds per new choice on a CPU). Lambda is fixed here (``constraint=None``),
    so F moves with it: larger lambda, more feature change allowed, more information discarded."""


    cache = {}

    def update(index=0, layer=list(layers)[-1], lam=float(lams[len(lams) // 2])):
        key = (index, lam)
        if key not in cache:  # progress while sigma is optimised (the figure replaces this line)
            print(f"optimising sigma for image {index}, lambda {lam}: {steps} steps x {samples} samples ...", flush=True)
            cache[key] = discarding.pixel_information(model, images[index:index + 1], list(layers), grid=grid,
                                                      steps=steps, lam=lam, samples=samples, config=config,
                                                      constraint=None, seed=seed)
        info = cache[key][layer]
        fg = None if fg_mask is None else fg_mask[index:index + 1]
        _show(viz.entropy_grid(images[index:index + 1], {layer: info.entropy_map}, fg_mask=fg, n=1,
                               title=f"image {index}, {layer}, lambda {lam}: H = {float(info.entropy[0]):.3f}, "
                                     f"F = {float(info.F[0]):.2f}"))

    # the image slider recomputes only when released (continuous_update=False): dragging stays responsive
    return w.interact(update, index=w.IntSlider(0, 0, len(images) - 1, continuous_update=False),
                      layer=w.Dropdown(options=list(layers)),
                      lam=w.Dropdown(options=[float(v) for v in lams], value=float(lams[len(lams) // 2])))


def word_explorer(results, tokens, keys=None, *, label: str = "log sigma"):
    """Browse precomputed word-level results: ``results = {model name: WordInfo}`` (sigma (L, B, n)),
    ``tokens`` the token lists, ``keys`` (B, n) bool planted key words; choose a sentence and see every
    model's layer x word heat-map."""


    def update(index=0):
        rows = []
        for name, info in results.items():
            n = len(tokens[index])
            vals = info.sigma[:, index, :n].log()
            k = None if keys is None else keys[index][:n]
            rows.append((name, tokens[index], vals, info.names, k))
        _show(viz.word_heatmaps(rows, label=label))

    return w.interact(update, index=w.IntSlider(0, 0, len(tokens) - 1))


# --- 03: semantic quantification ---------------------------------------------------------------

def face_explainer(ds, *, concept_model, performer, explainer, output=0, k: int = 6):
    """Choose a face, force attributes on / off (the face is redrawn with ``edit_faces``), and watch
    the performer's score and the explainer's contributions move (notebook 03)."""


    names = list(ds.attribute_names)
    boxes = {a: w.Dropdown(options=["as drawn", "on", "off"], value="as drawn", description=a,
                           layout=w.Layout(width="230px")) for a in names}

    def update(index=0, **states):
        changes = {a: int(v == "on") for a, v in states.items() if v != "as drawn"}
        face = edit_faces(ds, int(index), set=changes)
        E = explain_faces(face, concept_model=concept_model, performer=performer, explainer=explainer,
                          output=output)
        _show(viz.contribution_bars(E, [0], images=face.images, k=k,
                                    title=f"face {index}" + (f", edited {changes}" if changes else "")))

    return w.interact(update, index=w.IntSlider(0, 0, len(ds) - 1), **boxes)


def paste_mask_explorer(ds, models, *, attribute: str = "rosy_cheeks", output="margin"):
    """Choose a face; see it as drawn, with ``attribute`` pasted and masked, and the score of each
    model in ``models`` ({label: nn.Module}) under the three versions (notebook 03)."""


    def update(index=0):
        sub = ds.subset([int(index)])
        imgs = [sub.images, edit_faces(sub, None, set={attribute: 1}).images,
                edit_faces(sub, None, set={attribute: 0}).images]
        scores = {}
        for label, m in models.items():
            pm = paste_mask(m, sub, attribute, output=output)
            scores[label] = [[float(pm.original[0]), float(pm.pasted[0]), float(pm.masked[0])]]
        _show(viz.paste_mask_faces([imgs[0][0]], [imgs[1][0]], [imgs[2][0]], scores, title=f"face {index}"))

    return w.interact(update, index=w.IntSlider(0, 0, len(ds) - 1))


# --- 02: interpretable CNN ---

__all__ += ["icnn_filter_browser"]


def icnn_filter_browser(images, positions, scores, *, landmarks=None, rf: float = 16.0, k: int = 8):
    """Pick a filter; browse its top images with receptive-field boxes at its peak and landmarks.

    ``positions`` (F, N, 2) px and ``scores`` (F, N) from
    :func:`xnn_support.icnn_metrics.peak_positions` on ``images``.
    """


    def update(filter=0, top=k):
        _show(viz.icnn_top_images(images, positions, scores, filter, k=top, rf=rf, landmarks=landmarks))

    return w.interact(update, filter=w.IntSlider(0, 0, positions.shape[0] - 1),
                      top=w.IntSlider(k, 2, 16))


# --- 01: explanatory graph ---

__all__ += ["graph_node_browser"]


def graph_node_browser(graph, inference, images, *, k: int = 6, size: int = 16):
    """Choose a layer and a node: its top image patches, its parents' and its children's patches.
    ``inference`` from ``graph.infer`` on ``images``."""


    names = list(graph.layers)

    def rows_for(layer, node):
        pix = graph.pixels(layer, inference.pos[layer])
        p, _ = ge.node_patches(images, pix, inference.score[layer], node, k=k, size=size)
        return p

    def update(layer=names[0], node=0):
        L = graph.layers[layer]
        node = min(node, L.n_nodes - 1)
        rows, labels = [rows_for(layer, node)], [f"{layer} #{node} (filter {node // L.P})"]
        i = names.index(layer)
        if L.parents is not None:
            for j in L.parents[node].tolist():
                rows.append(rows_for(names[i + 1], j))
                labels.append(f"parent {names[i + 1]} #{j}")
        for lay, j in graph.children(layer, node)[:4]:
            rows.append(rows_for(lay, j))
            labels.append(f"child {lay} #{j}")
        _show(viz.graph_patch_gallery(rows, labels, title="node, its parents and children"))

    top = max(graph.layers[n].n_nodes for n in names) - 1
    return w.interact(update, layer=w.Dropdown(options=names, value=names[0]), node=w.IntSlider(0, 0, top))


# --- 06: point-cloud architecture utilities ---

__all__ += ["rotation_explorer"]


def rotation_explorer(models, cloud, *, steps: int = 60, samples: int = 4, seed: int = 0):
    """Rotate a cloud (axis angles theta, phi and angle alpha, as the paper's rotation table) and
    watch each model's per-point entropy change. The entropy of the rotated cloud is drawn on the
    unrotated cloud (a rotation-robust network keeps its pattern). ``models``: {name: model};
    ``cloud`` (N, 3). Each move re-runs :func:`~xnn_support.pointcloud.point_sigma` with a small
    budget (``steps`` x ``samples``; the same noise for every rotation)."""



    def update(theta=0.0, phi=0.0, alpha=0.0):
        print(f"optimising point sigma of {len(models)} model(s): {steps} steps x {samples} samples ...", flush=True)
        R = rodrigues(theta, phi, alpha).unsqueeze(0)
        ents = {name: point_sigma(m, cloud.unsqueeze(0), rotations=R, steps=steps, samples=samples,
                                  seed=seed).entropy for name, m in models.items()}
        _show(viz.point_entropy_clouds(cloud.expand(len(ents), -1, -1), torch.cat(list(ents.values())),
                                       titles=[f"{n}: theta {theta:.2f}, phi {phi:.2f}, alpha {alpha:.2f}"
                                               for n in ents]))

    return w.interact_manual(update, theta=w.FloatSlider(0.0, min=0.0, max=math.pi, step=0.05),
                             phi=w.FloatSlider(0.0, min=0.0, max=2 * math.pi, step=0.05),
                             alpha=w.FloatSlider(0.0, min=0.0, max=2 * math.pi, step=0.05))


# --- 07: decision trees ---
__all__ += ["tree_walker"]


def tree_walker(tree, images, x, g, A, part_names: Sequence[str], *, y=None):
    """Interactive (ipywidgets): pick an image and a depth; see the node chosen at each depth on the cosine
    path and the part contributions there. Computes through ``tree.explain`` and draws through
    :func:`xnn_support.viz.tree_explanations`."""
    out = w.Output()
    idx = w.IntSlider(0, 0, len(images) - 1, description="image")
    dep = w.IntSlider(2, 1, tree.max_depth, description="depth")

    def update(*_):
        i, d = idx.value, dep.value
        xi, gi = np.asarray(x[i:i + 1], dtype=np.float64), np.asarray(g[i:i + 1], dtype=np.float64)
        path = [int(tree.explain(xi, gi, k)[2][0]) for k in range(1, d + 1)]
        y_hat, contrib, _ = tree.explain(xi, gi, d)
        with out:
            out.clear_output(wait=True)
            print("path (node ids, images below):", " -> ".join(f"{v} ({len(tree.members[v])})" for v in path))
            fig = viz.tree_explanations(images[i:i + 1], {f"depth {d}": dt_metrics.part_contributions(contrib, A)}, part_names,
                                    y=None if y is None else y[i:i + 1], y_hat={f"depth {d}": y_hat})
            display(fig)
            plt.close(fig)

    idx.observe(update, "value")
    dep.observe(update, "value")
    update()
    return w.VBox([w.HBox([idx, dep]), out])


# --- 09: network transplanting ---
__all__ += ["transplant_explorer"]


def transplant_explorer(runs, refs=None):
    """Interactive (ipywidgets): pick a task, a teacher and what to plot (the score on the new category, or the
    held-out teacher-student gap) against the number K of annotated images, every method; draws through
    :func:`xnn_support.viz.transplant_score_curves` on the study's tables."""
    out = w.Output()
    task = w.Dropdown(options=list(dict.fromkeys(runs.task)), description="task")
    teacher = w.Dropdown(options=list(dict.fromkeys(runs.teacher)), description="teacher")
    value = w.ToggleButtons(options=["score", "gap"], description="plot")

    def update(*_):
        with out:
            out.clear_output(wait=True)
            fig = viz.transplant_score_curves(runs, refs, tasks=[task.value], teachers=[teacher.value], col=value.value)
            display(fig)
            plt.close(fig)

    for c in (task, teacher, value):
        c.observe(update, "value")
    update()
    return w.VBox([w.HBox([task, teacher]), value, out])


# --- 10: evaluating attribution maps ---
__all__ += ["coherency_explorer"]


def coherency_explorer(maps, images=None):
    """Interactive (ipywidgets): pick a method, a transform and an image; see the map before and after the
    function-preserving transform on the original's colour scale. ``maps``: the ``{"original" | kind: {method:
    (B, h, w)}}`` of ``coherency_table(..., return_maps=True)``; draws through :func:`xnn_support.viz.maps_before_after`."""
    out = w.Output()
    kinds = [k for k in maps if k != "original"]
    meth = w.Dropdown(options=list(maps["original"]), description="method")
    kind = w.Dropdown(options=kinds, description="transform")
    n = len(next(iter(maps["original"].values())))
    idx = w.IntSlider(0, 0, max(0, n - 1), description="image")

    def update(*_):
        with out:
            out.clear_output(wait=True)
            sub = {"original": maps["original"], kind.value: maps[kind.value]}
            display(viz.maps_before_after(sub, [meth.value], image=idx.value, images=images))

    for c in (meth, kind, idx):
        c.observe(update, "value")
    update()
    return w.VBox([w.HBox([meth, kind, idx]), out])


# --- 08: explainer networks ---
__all__ += ["explainer_filter_browser"]


def explainer_filter_browser(net, images, *, k: int = 8):
    """Interactive (ipywidgets): pick a track (interpretable / ordinary) and a filter of a fitted explainer
    (:func:`xnn_support.papers.explainer.fit_explainer_net`); see its maps on its ``k`` top images. Draws
    through :func:`xnn_support.viz.explainer_filter`."""
    out = w.Output()
    track = w.ToggleButtons(options=[("interpretable", "int"), ("ordinary", "ord")], description="track")
    filt = w.IntSlider(0, 0, net.explainer.channels - 1, description="filter")
    top = w.IntSlider(k, 2, 16, description="images")

    def update(*_):
        with out:
            out.clear_output(wait=True)
            _show(viz.explainer_filter(net, images, filt.value, track=track.value, k=top.value))

    for c in (track, filt, top):
        c.observe(update, "value")
    update()
    return w.VBox([w.HBox([track, filt, top]), out])

"""Interactive widgets for the notebooks (ipywidgets). Widget cells are tagged ``skip-execution``
so headless runs skip them; every widget computes through plain functions of the method modules and
draws through :mod:`xnn_support.viz`, so the static figures in normal cells show the same thing.
"""
from __future__ import annotations

from typing import Sequence

__all__ = ["feature_explorer", "dataset_browser"]


def _show(fig):
    from IPython.display import display
    import matplotlib.pyplot as plt

    display(fig)
    plt.close(fig)


def feature_explorer(model, images, layers: Sequence[str], *, n_channels: int = 16):
    """Choose an image and a layer; see that layer's first channels (via ``capture``)."""
    import ipywidgets as w
    import torch

    from . import viz
    from .capture import capture

    def update(index=0, layer=layers[0]):
        with torch.no_grad(), capture(model, [layer]) as cap:
            cap.forward(images[index:index + 1])
        _show(viz.feature_maps(cap[layer][0], n=n_channels, title=f"{layer}, image {index}"))

    return w.interact(update, index=w.IntSlider(0, 0, len(images) - 1), layer=w.Dropdown(options=list(layers)))


def dataset_browser(ds, *, kind: str = "images"):
    """Page through a data set: ``kind`` is images | faces | clouds | sentences."""
    import ipywidgets as w

    from . import viz

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
    :class:`~xnn_support.consistency.Decomposition` (e.g. ``row["eval"]`` of
    :func:`~xnn_support.consistency_experiments.consistency_by_layer`), for ``images``.
    """
    import ipywidgets as w

    from . import viz

    names = list(layers)
    if not names:
        raise ValueError("layers is empty: pass {name: (feat_b, decomposition)}")
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

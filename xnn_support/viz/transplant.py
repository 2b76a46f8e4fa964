"""09: figures of notebook 09 (network transplanting); every function returns a matplotlib Figure (the interactive
explorer is :func:`xnn_support.widgets.transplant_explorer`)."""
from __future__ import annotations

from typing import Optional, Sequence

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.patches import FancyBboxPatch

__all__ = ["transplant_diagram", "transplant_score_curves", "transplant_recovery_curves", "METHOD_STYLE"]

METHOD_STYLE = {
    "direct": dict(color="#444444", marker="s", label="direct (K annotated)"),
    "output_distillation": dict(color="#1f77b4", marker="o", label="output distillation"),
    "back_distillation": dict(color="#d62728", marker="D", label="back-distillation (L_od + L_bd)"),
    "back_target": dict(color="#9467bd", marker="v", label="option B: targets at g's input"),
    "gradient": dict(color="#ff7f0e", marker="^", label="option C: L_bd only"),
    "back_distillation+direct": dict(color="#d62728", marker="D", ls="--", label="back-distillation + direct"),
}
SCORE = {"cls": "accuracy", "seg": "object IoU"}


def _box(ax, xy, text, color, w=1.6, h=0.7):
    ax.add_patch(FancyBboxPatch(xy, w, h, boxstyle="round,pad=0.05", fc=color, ec="black", lw=1))
    ax.text(xy[0] + w / 2, xy[1] + h / 2, text, ha="center", va="center", fontsize=9)
    return (xy[0] + w, xy[1] + h / 2), (xy[0], xy[1] + h / 2)


def _arrow(ax, a, b, **kw):
    ax.annotate("", xy=b, xytext=a, arrowprops=dict(arrowstyle="->", lw=1.2, **kw))


def transplant_diagram(title: Optional[str] = "the generic network and one transplant"):
    """Category modules (left), adapters (middle), shared frozen task modules (right); the new category's module
    comes from its teacher T = g' o f, and only its adapters (red) are learned."""
    fig, ax = plt.subplots(figsize=(9, 4.2))
    cats = [("f quadruped", 3.0, "#cfe2f3"), ("f wheels", 2.0, "#cfe2f3"), ("f bird (from teacher)", 0.6, "#f4cccc")]
    tasks = [("g_cls (frozen)", 2.9), ("g_seg (frozen)", 1.3)]
    t_in = {}
    for name, y in tasks:
        _, t_in[name] = _box(ax, (6.2, y), name, "#d9ead3")
    for name, y, col in cats:
        out, _ = _box(ax, (0.2, y), name, col)
        for tname, ty in tasks:
            new = "bird" in name
            mid = ((out[0] + t_in[tname][0]) / 2, (out[1] + t_in[tname][1]) / 2)
            if new:
                ax.text(mid[0], mid[1], "h", color="#d62728", fontsize=11, ha="center", va="center",
                        bbox=dict(fc="white", ec="#d62728"))
            _arrow(ax, out, t_in[tname], color="#d62728" if new else "#777777", ls="-" if new else ":")
    _box(ax, (0.2, -0.6), "teacher T = g' o f  (bird-specific)", "#fff2cc", w=3.2)
    ax.text(3.6, -0.25, "f -> the new category module;  g' -> the targets of distillation", fontsize=8, va="center")
    ax.text(4.3, 3.9, "adapters: identity for the categories g was trained with; learned (h) for a new one",
            fontsize=8, ha="center")
    ax.set_xlim(0, 8.2)
    ax.set_ylim(-0.9, 4.2)
    ax.axis("off")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


def _mean_sd(df: pd.DataFrame, by: str, col: str):
    g = df.groupby(by)[col]
    m, s = g.mean(), g.std().fillna(0.0)
    return m.index.to_numpy(), m.to_numpy(), s.to_numpy()


def transplant_score_curves(runs: pd.DataFrame, refs: Optional[pd.DataFrame] = None, *,
                            tasks: Optional[Sequence[str]] = None, teachers: Optional[Sequence[str]] = None,
                            col: str = "score", title: Optional[str] = None):
    """Score on the new category against the number K of annotated images, one panel per (task, teacher): the
    direct and back-distillation + direct curves over K, each distillation method at K = 0 with the most
    unlabelled images (a marker with its sd), the teacher (dashed) and the identity adapter (dotted). ``col``:
    ``"score"`` or another column of ``runs`` (e.g. ``"gap"``, the teacher-student gap, log scale); a panel
    without runs says so."""
    runs = runs[runs.study == "curve"] if "study" in runs else runs
    tasks = list(tasks) if tasks is not None else list(dict.fromkeys(runs.task))
    teachers = list(teachers) if teachers is not None else list(dict.fromkeys(runs.teacher))
    fig, axes = plt.subplots(len(tasks), len(teachers), figsize=(4.6 * len(teachers), 3.4 * len(tasks)),
                             squeeze=False)
    for i, task in enumerate(tasks):
        for j, teacher in enumerate(teachers):
            ax = axes[i, j]
            sel = runs[(runs.task == task) & (runs.teacher == teacher)]
            for m, st in METHOD_STYLE.items():
                d = sel[sel.method == m]
                if d.empty:
                    continue
                if m in ("direct", "back_distillation+direct"):
                    k, mu, sd = _mean_sd(d, "K", col)
                    ax.errorbar(k, mu, sd, color=st["color"], marker=st["marker"], ls=st.get("ls", "-"),
                                label=st["label"], capsize=2, ms=4)
                else:
                    d = d[(d.K == 0) & (d.N_u == d.N_u.max())]
                    ax.errorbar([0], [d[col].mean()], [d[col].std() if len(d) > 1 else 0], color=st["color"],
                                marker=st["marker"], ls="none", label=f"{st['label']}, K=0", capsize=2, ms=6)
            if sel.empty:
                ax.text(0.5, 0.5, "not run", ha="center", va="center", transform=ax.transAxes)
            if col == "score" and refs is not None and len(refs):
                r = refs[(refs.task == task) & (refs.teacher == teacher)]
                for lab, ls in (("teacher", "--"), ("identity adapter", ":")):
                    v = r[r.model == lab].score
                    if len(v):
                        ax.axhline(v.mean(), color="black", ls=ls, lw=1, label=lab)
            ax.set_xlabel("K annotated images of the new category")
            ax.set_ylabel(SCORE.get(task, "score") if col == "score" else col)
            if col == "gap" and not sel.empty:
                ax.set_yscale("log")
            ax.set_title(f"{task}, {teacher} teacher", fontsize=10)
            ax.grid(alpha=0.3)
    axes[0, -1].legend(fontsize=7, loc="lower right")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def transplant_recovery_curves(runs: pd.DataFrame, *, cols: Sequence[str] = ("recovery", "func_recovery"),
                               teacher: str = "planted", title: Optional[str] = None):
    """Adapter recovery error against the number of unlabelled images N_u, per distillation method (planted
    teacher, K = 0, study ``"recovery"`` when the table has one), one panel per (task, error): ``recovery`` ``||H - M^-1||_F / ||M^-1||_F``, ``func_recovery``
    the error on held-out features; log-log."""
    sel = runs[(runs.teacher == teacher) & (runs.K == 0)]
    if "study" in sel:
        sel = sel[sel.study == "recovery"]
    tasks = list(dict.fromkeys(sel.task))
    fig, axes = plt.subplots(len(tasks), len(cols), figsize=(4.6 * len(cols), 3.3 * len(tasks)), squeeze=False)
    labels = {"recovery": "||H - M^-1|| / ||M^-1||", "func_recovery": "held-out ||h(x) - M^-1 x||^2 / ||M^-1 x||^2",
              "gap": "teacher-student gap"}
    for i, task in enumerate(tasks):
        for j, col in enumerate(cols):
            ax = axes[i, j]
            for m, st in METHOD_STYLE.items():
                d = sel[(sel.task == task) & (sel.method == m)]
                if d.empty or m == "direct":
                    continue
                n, mu, sd = _mean_sd(d, "N_u", col)
                ax.errorbar(n, mu, sd, color=st["color"], marker=st["marker"], label=st["label"], capsize=2, ms=4)
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel("N_u unlabelled images")
            ax.set_ylabel(labels.get(col, col), fontsize=8)
            ax.set_title(f"{task}: {col}", fontsize=10)
            ax.grid(alpha=0.3, which="both")
    axes[0, -1].legend(fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


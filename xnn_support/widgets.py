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

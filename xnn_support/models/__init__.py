"""The model zoo: one registry, ``build(name, **config)``, for every network the notebooks train.

=====================  ====================================================  =====================
name                   what                                                   input
=====================  ====================================================  =====================
``vgg_small``          VGG-like CNN, BN, 32-128 px (:class:`.cnn.VGGSmall`)    (B, 3, S, S) float
``alexnet_small``      AlexNet-like CNN (:class:`.cnn.AlexNetSmall`)          (B, 3, S, S) float
``resnet_small``       ResNet-like CNN, layer1..layer4 (:class:`.cnn.ResNetSmall`)  (B, 3, S, S)
``vgg16`` ``vgg16_bn`` ``vgg19`` ``alexnet`` ``resnet18`` ``resnet34`` ``resnet50``
                       torchvision, ``weights=None``; ``weights_path=`` loads a user's state dict
``pointnet``           small PointNet (:class:`.pointnet.PointNet`)           (B, N, 3) float
``pointnet2``          Mini-PointNet++ SSG/MSG, +density/+weightnet/+OE        (B, N, 3) float
                       (:class:`.pointnets.MiniPointNet2`)
``pointsift``          Mini-PointSIFT, with/without orientation encoding      (B, N, 3) float
``pointconv``          Mini-PointConv, +-density, +-weight net                (B, N, 3) float
                       (:class:`.pointnets_seq.MiniPointConv`)
``point2sequence``     Mini-Point2Sequence, 1-4 scales, switches as above     (B, N, 3) float
``dgcnn``              DGCNN, single or multi-scale EdgeConv                  (B, N, 3) float
``text_cnn``           1-D CNN text classifier (:class:`.text.TextCNN`)       ids (B, L) [+ mask]
``text_lstm``          LSTM text classifier (:class:`.text.TextLSTM`)         ids (B, L) [+ mask]
``text_transformer``   Transformer text classifier                            ids (B, L) [+ mask]
``efficientnet_lite0`` timm tf_efficientnet_lite0, ImageNet weights from a    (B, 3, 224, 224)
                       pip package, or ``weights=None`` (:mod:`.pretrained`)  see ``preprocess``
=====================  ====================================================  =====================

``build`` records the name and config on the module (``model.xnn_config``), which the trainer's
checkpoint cache uses as the model's identity. ``seed=`` makes the initial weights reproducible
without touching the global random state. Nothing here downloads anything: torchvision models are
always constructed with ``weights=None``.
"""
from __future__ import annotations

import difflib
from typing import Callable, Dict, List, Optional

import torch
from torch import nn

from ..core.utils import file_sha256

from .cnn import AlexNetSmall, ResNetSmall, VGGSmall, TORCHVISION_MODELS, torchvision_model
from .pointnet import PointNet
from .pretrained import efficientnet_lite0
from .text import TextCNN, TextLSTM, TextTransformer

__all__ = ["build", "available", "register", "VGGSmall", "AlexNetSmall", "ResNetSmall", "PointNet",
           "TextCNN", "TextLSTM", "TextTransformer"]

_REGISTRY: Dict[str, Callable[..., nn.Module]] = {
    "vgg_small": VGGSmall,
    "alexnet_small": AlexNetSmall,
    "resnet_small": ResNetSmall,
    "pointnet": PointNet,
    "text_cnn": TextCNN,
    "text_lstm": TextLSTM,
    "text_transformer": TextTransformer,
    "efficientnet_lite0": efficientnet_lite0,
}
from . import pointnets as _pn
from . import pointnets_seq as _pns  # noqa: E402  (paper 06 backbones)

_pn.register_all(lambda n, f: _REGISTRY.__setitem__(n, f))
_pns.register_all(lambda n, f: _REGISTRY.__setitem__(n, f))
for _n in TORCHVISION_MODELS:
    _REGISTRY[_n] = (lambda name: (lambda **cfg: torchvision_model(name, **cfg)))(_n)


def available() -> List[str]:
    """Names accepted by :func:`build`, sorted."""
    return sorted(_REGISTRY)


def register(name: str, factory: Callable[..., nn.Module], overwrite: bool = False) -> None:
    """Add a model factory (keyword config -> ``nn.Module``) under ``name``."""
    if not isinstance(name, str) or not name:
        raise ValueError("model name must be a non-empty string")
    if name in _REGISTRY and not overwrite:
        raise ValueError(f"model {name!r} is already registered (pass overwrite=True to replace it)")
    _REGISTRY[name] = factory


def build(name: str, seed: Optional[int] = None, **config) -> nn.Module:
    """Build a registered model; ``config`` goes to its constructor.

    ``seed``: if given, the initial weights are drawn from a generator seeded with it, and the
    global torch random state is left as it was. Raises ``ValueError`` for an unknown name (listing
    the available ones) or a bad config (naming the offending argument).
    """
    if name not in _REGISTRY:
        close = difflib.get_close_matches(str(name), list(_REGISTRY), n=3, cutoff=0.5)
        hint = f" (did you mean {', '.join(map(repr, close))}?)" if close else ""
        raise ValueError(f"unknown model {name!r}{hint}; available: {', '.join(available())}")
    factory = _REGISTRY[name]

    def make() -> nn.Module:
        try:
            return factory(**config)
        except TypeError as e:  # an unexpected keyword: say which model and what it takes
            raise ValueError(f"bad config for model {name!r}: {e}") from None

    if seed is None:
        model = make()
    else:
        if not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = make()
    model.xnn_config = {"name": name, **{k: _jsonable(v) for k, v in config.items()}}
    if config.get("weights_path") is not None:  # identify user weights by content, not by path
        model.xnn_config["weights_sha256"] = file_sha256(config["weights_path"])
    return model


def _jsonable(v):
    """Config values as JSON-friendly data (tuples -> lists, paths -> str)."""
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    return str(v)

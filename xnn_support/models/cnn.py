"""Image CNNs: small VGG-, AlexNet- and ResNet-like nets for 32-128 px, and torchvision backbones.

Serves every image paper: the explanatory graph (01, "small CPU teaching mode: VGG-like net with
BatchNorm on 64x64 inputs, graph on the 32x32 and 16x16 maps"), interpretable CNNs (02, a BN
VGG-like 16-32-64 backbone), information discarding (04, "small VGG-like and ResNet-like CNNs, 4-8
conv layers") and knowledge consistency (05, VGG-16-BN / AlexNet / ResNet taps).

Design notes

* Layer naming follows torchvision so the papers' taps read the same on small and full nets:
  VGG/AlexNet-like nets keep their conv stack in ``features`` (an ``nn.Sequential``, so
  ``"features.7"`` addresses a layer), then ``pool`` and ``classifier``; the ResNet-like net has
  ``conv1, bn1, relu, maxpool, layer1..layer4, pool, fc``. (torchvision's ``avgpool`` is called
  ``pool`` here because it may be a max-pool: option ``pool="max"|"avg"``.)
* Every ReLU is its own, non-in-place module. torchvision reuses one in-place ReLU per residual
  block; that trips forward hooks (a module called twice) and full backward hooks. Each residual
  block here has ``relu1``, ``relu2`` and an identity ``merge`` whose output is the pre-ReLU sum,
  the tap paper 05 uses ("layer3 output before the last ReLU").
* The small nets end in adaptive pooling, so an input larger or smaller than ``in_size``
  still runs; ``in_size`` chooses how many poolings there are (fewer for 32 px, one more for
  >= 96 px) so the last conv map stays 4-8 px wide.
* torchvision models are always built with ``weights=None``; nothing is ever downloaded. Real
  weights come only from a file the user names (``weights_path``), read with ``weights_only=True``.

Deviations: the small nets are teaching-size stand-ins, not the papers' ImageNet networks.
"""
from __future__ import annotations

import os
from typing import List, Optional, Sequence, Union

import torch
from torch import nn
import torchvision.models as tvm

__all__ = ["VGGSmall", "AlexNetSmall", "ResNetSmall", "BasicBlock", "TORCHVISION_MODELS",
           "torchvision_model", "check_image_input"]

MIN_SIZE, MAX_SIZE = 32, 128


def _check_common(num_classes: int, in_size: int, width: float, in_channels: int) -> None:
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    if not isinstance(in_size, int) or not MIN_SIZE <= in_size <= MAX_SIZE:
        raise ValueError(f"in_size must be an integer in [{MIN_SIZE}, {MAX_SIZE}] px, got {in_size!r}; "
                         "for larger inputs use a torchvision model ('vgg16', 'resnet18', ...)")
    if not isinstance(width, (int, float)) or not 0 < width <= 16:
        raise ValueError(f"width multiplier must be in (0, 16], got {width!r}")
    if not isinstance(in_channels, int) or in_channels < 1:
        raise ValueError(f"in_channels must be a positive integer, got {in_channels!r}")


def check_image_input(x: torch.Tensor, in_channels: int, min_size: int, name: str) -> None:
    """Raise a clear ``ValueError`` unless ``x`` is a (B, C, H, W) float batch the net can take."""
    if not torch.is_tensor(x) or x.dim() != 4:
        shape = tuple(x.shape) if torch.is_tensor(x) else type(x).__name__
        raise ValueError(f"{name} expects a (B, {in_channels}, H, W) tensor, got {shape}")
    if x.shape[1] != in_channels:
        raise ValueError(f"{name} expects {in_channels} input channels, got {x.shape[1]} "
                         f"(shape {tuple(x.shape)})")
    if min(x.shape[-2:]) < min_size:
        raise ValueError(f"{name} needs inputs of at least {min_size}x{min_size} px, got "
                         f"{tuple(x.shape[-2:])}")


def _ch(base: int, width: float) -> int:
    return max(1, int(round(base * width)))


class VGGSmall(nn.Module):
    """A VGG-like CNN: blocks of 3x3 conv (+BN) + ReLU separated by 2x2 max-pools.

    Default plan at 64 px with ``width=1`` (spatial size after each block in brackets)::

        16 M [32] 32 32 M [16] 64 64 M [8] 128 128   -> global max pool -> fc 128 -> fc classes

    so the explanatory-graph layers sit at 32x32, 16x16 and 8x8. ``in_size`` < 48 drops the first
    pooling; >= 96 adds one. ``plan`` overrides the whole list (ints = conv widths, "M" = pool).
    ``pool``: global ``"max"`` (default: on creatures(2000, 64), 10 epochs, Adam 1e-3, cosine, it
    reached 0.93 val acc against 0.87 for ``"avg"``) or ``"avg"``.
    """

    def __init__(self, num_classes: int = 2, in_size: int = 64, width: float = 1.0,
                 batchnorm: bool = True, in_channels: int = 3, dropout: float = 0.3,
                 plan: Optional[Sequence[Union[int, str]]] = None, pool: str = "max"):
        super().__init__()
        _check_common(num_classes, in_size, width, in_channels)
        if plan is None:
            base: List[Union[int, str]] = [16, "M", 32, 32, "M", 64, 64, "M", 128, 128]
            if in_size < 48:
                base = [16, 32, 32, "M", 64, 64, "M", 128, 128]
            elif in_size >= 96:
                base = [16, "M", 32, 32, "M", 64, 64, "M", 128, 128, "M", 128]
            plan = [c if c == "M" else _ch(c, width) for c in base]
        plan = list(plan)
        if not plan or not all(c == "M" or (isinstance(c, int) and c > 0) for c in plan):
            raise ValueError(f"plan must list positive conv widths and 'M' (pool), got {plan!r}")
        if not any(c != "M" for c in plan):
            raise ValueError("plan needs at least one conv layer")
        layers: List[nn.Module] = []
        c_in = in_channels
        for c in plan:
            if c == "M":
                layers.append(nn.MaxPool2d(2, 2))
                continue
            layers.append(nn.Conv2d(c_in, c, 3, padding=1, bias=not batchnorm))
            if batchnorm:
                layers.append(nn.BatchNorm2d(c))
            layers.append(nn.ReLU())
            c_in = c
        self.in_channels, self.in_size = in_channels, in_size
        self.min_size = 2 ** sum(1 for c in plan if c == "M")
        self.features = nn.Sequential(*layers)
        self.pool = _global_pool(pool, 1)
        hidden = max(c_in, 32)
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Dropout(dropout), nn.Linear(c_in, hidden), nn.ReLU(),
            nn.Dropout(dropout), nn.Linear(hidden, num_classes))
        _init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_image_input(x, self.in_channels, self.min_size, type(self).__name__)
        return self.classifier(self.pool(self.features(x)))


class AlexNetSmall(nn.Module):
    """An AlexNet-like CNN: a large-kernel first conv, two pooled 5x5/3x3 stages, three 3x3 convs,
    a final pool and a two-hidden-layer classifier with dropout (torchvision's ``alexnet`` layout).

    The first conv has stride 1 up to 64 px and stride 2 above, so the conv5 map stays ~7-15 px.
    ``pool`` (``"avg"`` or ``"max"``) reduces the last map to 2x2 before the classifier.
    """

    def __init__(self, num_classes: int = 2, in_size: int = 64, width: float = 1.0,
                 batchnorm: bool = True, in_channels: int = 3, dropout: float = 0.5, pool: str = "avg"):
        super().__init__()
        _check_common(num_classes, in_size, width, in_channels)
        c1, c2, c3, c4, c5 = (_ch(c, width) for c in (24, 64, 96, 96, 64))
        stride = 1 if in_size <= 64 else 2

        def conv(ci, co, k, s=1):
            block = [nn.Conv2d(ci, co, k, stride=s, padding=k // 2, bias=not batchnorm)]
            return block + ([nn.BatchNorm2d(co)] if batchnorm else []) + [nn.ReLU()]

        self.features = nn.Sequential(
            *conv(in_channels, c1, 5, stride), nn.MaxPool2d(3, 2),
            *conv(c1, c2, 5), nn.MaxPool2d(3, 2),
            *conv(c2, c3, 3), *conv(c3, c4, 3), *conv(c4, c5, 3), nn.MaxPool2d(3, 2))
        self.in_channels, self.in_size = in_channels, in_size
        self.min_size = 15 if stride == 1 else 29  # smallest input whose conv5 map survives 3 pools
        self.pool = _global_pool(pool, 2)
        hidden = _ch(256, width)
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Dropout(dropout), nn.Linear(c5 * 4, hidden), nn.ReLU(),
            nn.Dropout(dropout), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))
        _init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_image_input(x, self.in_channels, self.min_size, type(self).__name__)
        return self.classifier(self.pool(self.features(x)))


class BasicBlock(nn.Module):
    """A ResNet basic block with separate modules per call site (hook-safe); ``merge`` (identity)
    outputs the pre-ReLU residual sum."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.downsample = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False),
                                            nn.BatchNorm2d(c_out))
        self.merge = nn.Identity()
        self.relu2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu2(self.merge(out + identity))


class ResNetSmall(nn.Module):
    """A ResNet-like CNN with torchvision naming: 3x3 stem, ``layer1..layer4`` of basic blocks
    (widths 16-32-64-128 x width, strides 1-2-2-2), global average pool, ``fc``.

    ``blocks`` gives the number of blocks per stage (default one each: 9 conv layers). At >= 96 px
    the stem is followed by a 2x2 max-pool (``maxpool``; an identity below). ``pool``: global
    ``"avg"`` (torchvision) or ``"max"``.
    """

    def __init__(self, num_classes: int = 2, in_size: int = 64, width: float = 1.0,
                 in_channels: int = 3, blocks: Sequence[int] = (1, 1, 1, 1), pool: str = "avg"):
        super().__init__()
        _check_common(num_classes, in_size, width, in_channels)
        blocks = list(blocks)
        if len(blocks) != 4 or not all(isinstance(b, int) and b >= 1 for b in blocks):
            raise ValueError(f"blocks must be four positive integers, got {blocks!r}")
        widths = [_ch(c, width) for c in (16, 32, 64, 128)]
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(2, 2) if in_size >= 96 else nn.Identity()
        c_in = widths[0]
        for i, (c, n, s) in enumerate(zip(widths, blocks, (1, 2, 2, 2))):
            stage = [BasicBlock(c_in, c, s)] + [BasicBlock(c, c) for _ in range(n - 1)]
            setattr(self, f"layer{i + 1}", nn.Sequential(*stage))
            c_in = c
        self.pool = _global_pool(pool, 1)
        self.fc = nn.Linear(c_in, num_classes)
        self.in_channels, self.in_size = in_channels, in_size
        self.min_size = 8 * (2 if in_size >= 96 else 1)
        _init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_image_input(x, self.in_channels, self.min_size, type(self).__name__)
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.pool(x), 1))


def _global_pool(kind: str, size: int) -> nn.Module:
    if kind == "max":
        return nn.AdaptiveMaxPool2d(size)
    if kind == "avg":
        return nn.AdaptiveAvgPool2d(size)
    raise ValueError(f"pool must be 'max' or 'avg', got {kind!r}")


def _init_weights(model: nn.Module) -> None:
    """Kaiming-normal convs, unit BN, small-normal linears (torchvision's VGG/ResNet recipe)."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)


# --------------------------------------------------------------------------- torchvision models

TORCHVISION_MODELS = ("vgg16", "vgg16_bn", "vgg19", "alexnet", "resnet18", "resnet34", "resnet50")


def _read_state_dict(path) -> dict:
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"weights_path {path!r} does not exist (xnn never downloads weights)")
    obj = torch.load(path, map_location="cpu", weights_only=True)
    for k in ("state_dict", "model"):  # common checkpoint wrappers, and xnn's own cache entries
        if isinstance(obj, dict) and isinstance(obj.get(k), dict):
            obj = obj[k]
    if not isinstance(obj, dict) or not all(torch.is_tensor(v) for v in obj.values()):
        raise ValueError(f"{path!r} does not hold a state dict (a mapping of names to tensors)")
    return {k[7:] if k.startswith("module.") else k: v for k, v in obj.items()}  # DataParallel


def _head(model: nn.Module, name: str):
    """(parent module, attribute, Linear) of the classification head."""
    if name.startswith("resnet"):
        return model, "fc", model.fc
    return model.classifier, "6", model.classifier[6]


def torchvision_model(name: str, num_classes: int = 1000, weights_path=None) -> nn.Module:
    """A torchvision classifier built with ``weights=None``; optional user weights; new head.

    With ``weights_path`` the file's head size is used to load it, and the head is then replaced by
    a freshly initialised ``num_classes``-way linear layer if the sizes differ.
    """

    if name not in TORCHVISION_MODELS:
        raise ValueError(f"unknown torchvision model {name!r}; choose from {TORCHVISION_MODELS}")
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    ctor = getattr(tvm, name)
    if weights_path is None:
        return ctor(weights=None, num_classes=num_classes)
    state = _read_state_dict(weights_path)
    model = ctor(weights=None)
    parent, attr, head = _head(model, name)
    prefix = "fc" if parent is model else "classifier.6"
    w = state.get(prefix + ".weight")
    if w is not None and w.dim() == 2 and w.shape[0] != head.out_features:
        setattr(parent, attr, nn.Linear(head.in_features, w.shape[0]))
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ValueError(f"weights in {os.fspath(weights_path)!r} do not fit torchvision {name}: "
                         f"{e}") from None
    parent, attr, head = _head(model, name)
    if head.out_features != num_classes:
        setattr(parent, attr, nn.Linear(head.in_features, num_classes))
    return model

"""The one argument-checking helper: every public entry point checks its arguments through these.

Each check returns the checked (and normalised) value or raises ``ValueError`` whose message names
the argument, what it must be, what it got, and the fix::

    steps must be an integer >= 1, got 0; pass steps=None for the default or an integer >= 1

* numbers: :func:`integer` (:func:`positive_int`, :func:`non_negative_int`), :func:`number`
  (:func:`positive`, :func:`non_negative`, :func:`in_range`); ``bool`` is never a number, NaN and
  inf never pass, and ``None`` passes only where ``optional=True`` (then the caller's documented
  default applies: ``v = DEFAULT if v is None else v``, never ``v or DEFAULT``, which turns 0 into
  the default);
* names: :func:`name` (a non-empty string), :func:`choice` (one of a few values);
* tensors: :func:`finite_tensor` (type, dimensions, non-empty, finite), :func:`labels` (integer
  class indices inside the model's classes);
* models: :func:`model_device` (no weights on the ``meta`` device), :func:`model_input` (the input's
  floating dtype is the model's).
"""
from __future__ import annotations

import math
import numbers
from typing import Any, Iterable, Optional, Sequence

import torch
from torch import nn

__all__ = ["integer", "positive_int", "non_negative_int", "number", "positive", "non_negative", "in_range",
           "choice", "name", "finite_tensor", "labels", "model_device", "model_dtype", "model_input", "fail", "Shown"]


class Shown(str):
    """A description shown as is in :func:`fail` (not repr'd): shapes, dtypes, counts."""


def fail(arg: str, want: str, got: Any, fix: Optional[str] = None) -> ValueError:
    """The error of every check: ``"{arg} must be {want}, got {got!r}; {fix}"`` (returned, to raise)."""
    text = got if isinstance(got, Shown) else repr(got)
    return ValueError(f"{arg} must be {want}, got {text}; {fix or f'pass {arg} as {want}'}")


def _pass_hint(arg: str, want: str, optional: bool) -> str:
    return f"pass {arg}=None for the default or {want}" if optional else f"pass {want}"


def integer(arg: str, v: Any, *, minimum: Optional[int] = None, maximum: Optional[int] = None,
            optional: bool = False, fix: Optional[str] = None) -> Optional[int]:
    """``v`` as an ``int`` (numpy integers accepted; bool, floats and strings refused), in range."""
    if v is None and optional:
        return None
    lo = "" if minimum is None else f" >= {minimum}"
    hi = "" if maximum is None else (f" <= {maximum}" if not lo else f" and <= {maximum}")
    want = f"an integer{lo}{hi}"
    if isinstance(v, bool) or not isinstance(v, numbers.Integral):
        raise fail(arg, want, v, fix or _pass_hint(arg, want, optional))
    v = int(v)
    if (minimum is not None and v < minimum) or (maximum is not None and v > maximum):
        raise fail(arg, want, v, fix or _pass_hint(arg, want, optional))
    return v


def positive_int(arg: str, v: Any, *, optional: bool = False, fix: Optional[str] = None) -> Optional[int]:
    return integer(arg, v, minimum=1, optional=optional, fix=fix)


def non_negative_int(arg: str, v: Any, *, optional: bool = False, fix: Optional[str] = None) -> Optional[int]:
    return integer(arg, v, minimum=0, optional=optional, fix=fix)


def number(arg: str, v: Any, *, minimum: Optional[float] = None, maximum: Optional[float] = None,
           low_open: bool = False, high_open: bool = False, optional: bool = False,
           fix: Optional[str] = None) -> Optional[float]:
    """``v`` as a finite ``float`` (bool and strings refused) inside the given bounds."""
    if v is None and optional:
        return None
    parts = []
    if minimum is not None:
        parts.append(f"{'>' if low_open else '>='} {minimum:g}")
    if maximum is not None:
        parts.append(f"{'<' if high_open else '<='} {maximum:g}")
    want = "a finite number" + (" " + " and ".join(parts) if parts else "")
    hint = fix or _pass_hint(arg, want, optional)
    if torch.is_tensor(v) and v.numel() == 1:
        v = v.item()
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        raise fail(arg, want, v, hint)
    f = float(v)
    if not math.isfinite(f):
        raise fail(arg, want, v, hint)
    if minimum is not None and (f < minimum or (low_open and f == minimum)):
        raise fail(arg, want, v, hint)
    if maximum is not None and (f > maximum or (high_open and f == maximum)):
        raise fail(arg, want, v, hint)
    return f


def positive(arg: str, v: Any, *, optional: bool = False, fix: Optional[str] = None) -> Optional[float]:
    return number(arg, v, minimum=0, low_open=True, optional=optional, fix=fix)


def non_negative(arg: str, v: Any, *, optional: bool = False, fix: Optional[str] = None) -> Optional[float]:
    return number(arg, v, minimum=0, optional=optional, fix=fix)


def in_range(arg: str, v: Any, lo: float, hi: float, *, low_open: bool = False, high_open: bool = False,
             optional: bool = False, fix: Optional[str] = None) -> Optional[float]:
    return number(arg, v, minimum=lo, maximum=hi, low_open=low_open, high_open=high_open, optional=optional,
                  fix=fix)


def choice(arg: str, v: Any, choices: Iterable[Any], *, fix: Optional[str] = None) -> Any:
    """``v`` if it is one of ``choices``."""
    choices = tuple(choices)
    if v not in choices:
        raise fail(arg, f"one of {', '.join(map(repr, choices))}", v, fix or f"pass one of {list(choices)}")
    return v


def name(arg: str, v: Any, *, fix: Optional[str] = None) -> str:
    """``v`` if it is a non-empty (not all-blank) string."""
    if not isinstance(v, str) or not v.strip():
        raise fail(arg, "a non-empty name", v, fix or f"pass {arg} as a non-empty string")
    return v


def _shape(t) -> Shown:
    return Shown(f"shape {tuple(t.shape)}" if torch.is_tensor(t) else type(t).__name__)


def finite_tensor(arg: str, t: Any, *, dims: Optional[Sequence[int]] = None, floating: bool = True,
                  nonempty: bool = True, what: str = "a tensor", fix: Optional[str] = None) -> torch.Tensor:
    """``t`` if it is a tensor with ``dims`` dimensions (any of them), floating point when asked,
    with at least one row, and (for floating tensors) only finite values."""
    want = f"{'a floating-point' if floating else 'a'} tensor" + (
        f" with {' or '.join(map(str, dims))} dimensions ({what})" if dims else "")
    if not torch.is_tensor(t) or (dims and t.dim() not in tuple(dims)) or (floating and not t.is_floating_point()):
        got = Shown(f"{_shape(t)} of {t.dtype}") if torch.is_tensor(t) else _shape(t)
        raise fail(arg, want, got, fix or f"pass {arg} as {want}")
    if nonempty and (t.dim() == 0 or t.shape[0] == 0):
        raise fail(arg, "non-empty", _shape(t), fix or f"pass at least one row in {arg}")
    if t.is_floating_point() and t.device.type != "meta" and not bool(torch.isfinite(t).all()):
        bad = int((~torch.isfinite(t)).sum())
        raise fail(arg, "finite", Shown(f"{bad} NaN or inf value(s) of {t.numel()}"),
                   fix or f"replace or drop them first (e.g. torch.nan_to_num({arg}) or index the finite rows)")
    return t


def labels(arg: str, y: Any, *, n: Optional[int] = None, num_classes: Optional[int] = None) -> torch.Tensor:
    """``y`` as a 1-D long tensor of class indices: integer dtype (floats refused, even whole ones),
    ``n`` of them when given, each in ``[0, num_classes)`` when given."""
    if not torch.is_tensor(y):
        try:
            y = torch.as_tensor(y)
        except (TypeError, ValueError, RuntimeError):
            raise fail(arg, "integer class indices", _shape(y), f"pass {arg} as a 1-D integer tensor") from None
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise fail(arg, "integer class indices", Shown(str(y.dtype)),
                   f"pass {arg} as an integer tensor, e.g. {arg}.long() of whole class numbers")
    y = y.reshape(-1).long()
    if n is not None and y.shape[0] != n:
        raise fail(arg, f"one label per input ({n})", Shown(f"{y.shape[0]} labels"),
                   f"pass exactly {n} labels, in the order of the inputs")
    if num_classes is not None and y.numel() and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise fail(arg, f"class indices in [0, {num_classes}) (the model's {num_classes} outputs)",
                   Shown(f"values in [{int(y.min())}, {int(y.max())}]"),
                   "pass labels of this model's classes")
    return y


def model_device(model: nn.Module, arg: str = "model") -> torch.device:
    """The model's device; a model with weights on the ``meta`` device (shapes only) is refused."""
    if not isinstance(model, nn.Module):
        raise fail(arg, "an nn.Module", Shown(type(model).__name__), f"pass {arg} as a torch.nn.Module")
    for t in model.parameters():
        if t.is_meta:
            raise fail(arg, "a model with real weights", Shown("weights on the meta device (no data)"),
                       "materialise it first: model.to_empty(device='cpu'), then model.load_state_dict(...)")
        return t.device
    for t in model.buffers():
        if t.is_meta:
            raise fail(arg, "a model with real buffers", Shown("buffers on the meta device (no data)"),
                       "materialise it first: model.to_empty(device='cpu'), then model.load_state_dict(...)")
        return t.device
    return torch.device("cpu")


def model_dtype(model: nn.Module) -> Optional[torch.dtype]:
    """The dtype of the model's first floating-point parameter (or buffer); None if it has none."""
    for t in model.parameters():
        if t.is_floating_point():
            return t.dtype
    for t in model.buffers():
        if t.is_floating_point():
            return t.dtype
    return None


def model_input(model: nn.Module, x: Any, arg: str = "x") -> torch.device:
    """Refuse a meta-device model and a floating input whose dtype is not the model's (float16 or
    float64 data into a float32 net fail deep inside torch otherwise); returns the model's device."""
    dev = model_device(model)
    want = model_dtype(model)
    if torch.is_tensor(x) and x.is_floating_point() and want is not None and x.dtype != want:
        raise fail(arg, f"{want} like the model's weights", Shown(str(x.dtype)),
                   f"pass {arg}.to({want}) (or convert the model: model.to({x.dtype}))")
    return dev

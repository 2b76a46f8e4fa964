"""Feature capture by layer name: the one hook mechanism every method module uses.

``capture(model, layers)`` is a context manager that registers forward hooks on the named modules
(dotted names such as ``"features.29"`` or ``"layer4.1.conv2"``, or module objects) and always
removes them on exit, also when an exception is raised. Features are cloned in the hook, so an
in-place ReLU right after a hooked layer cannot change what was captured. The default
``clone="auto"`` copies lazily: only when an in-place module (``inplace=True``, e.g. ``ReLU(inplace=True)``)
is about to overwrite a captured tensor; an in-place operation written in a ``forward`` (such as
ResNet's ``out += identity``) is detected through the tensor's version counter and raises a clear
error asking for ``clone=True`` (always copy), so a captured feature is never silently wrong.

Traps handled:

* a bad name raises :class:`CaptureError` listing the closest valid names;
* a module called twice in one forward (weight sharing, a reused ReLU) is reported: by default an
  error, or ``repeats="warn"`` (keep the last call) / ``repeats="all"`` (keep every call, a list);
* ``stop=True`` truncates the forward once every requested layer has fired (``Capture.run``),
  so later layers are never computed. A truncated forward cannot see a second call of a layer, so
  the first ``forward`` of a ``Capture`` with ``stop=True`` is preceded by one whole probe forward
  (no grad; the random number generators and the model's buffers are restored afterwards, so the
  truncated forwards compute exactly what they computed without it) that counts the calls: a repeat is
  reported as above (``"error"``: :class:`CaptureError`; ``"warn"``/``"all"``: the forwards are then
  not truncated, so what is kept is what plain capture keeps);
* ``Capture.run(x, batch_size=...)`` runs the model in chunks on the model's device and
  concatenates the captured features on the CPU (or keeps them on the device, ``to_cpu=False``).
"""
from __future__ import annotations

import difflib
import warnings
from contextlib import contextmanager
from typing import Dict, Iterable, List, Optional, Sequence, Union

import torch
from torch import nn

from . import validate as V
from .utils import device_of
from .utils import progress as bar

__all__ = ["capture", "Capture", "CaptureError", "resolve_layers", "layer_names"]

LayerSpec = Union[str, nn.Module]


class CaptureError(KeyError):
    """A requested layer does not exist, or a module was called more than once per forward."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else ""


class _StopForward(Exception):
    """Raised inside a hook to end a truncated forward early."""


def layer_names(model: nn.Module) -> List[str]:
    """All addressable dotted module names of ``model`` (the root is ``""``)."""
    return [n for n, _ in model.named_modules()]


def resolve_layers(model: nn.Module, layers: Union[LayerSpec, Sequence[LayerSpec]]) -> Dict[str, nn.Module]:
    """Map each requested layer (dotted name or module object) to ``(name, module)``, in order.

    Raises :class:`CaptureError` naming the closest valid names for an unknown name, and for a
    module object that is not part of ``model``.
    """
    if isinstance(layers, (str, nn.Module)):
        layers = [layers]
    layers = list(layers)
    if not layers:
        raise CaptureError("no layers requested: pass at least one dotted layer name")
    named = dict(model.named_modules())
    by_id = {id(m): n for n, m in named.items()}
    out: Dict[str, nn.Module] = {}
    for spec in layers:
        if isinstance(spec, nn.Module):
            if id(spec) not in by_id:
                raise CaptureError(f"module {type(spec).__name__} is not a submodule of the model")
            name = by_id[id(spec)]
        elif isinstance(spec, str):
            name = spec
            if name not in named:
                choices = [n for n in named if n]
                close = difflib.get_close_matches(name, choices, n=5, cutoff=0.4)
                if not close:  # fall back to names sharing the first component
                    head = name.split(".")[0]
                    close = [n for n in choices if n.split(".")[0] == head][:5] or choices[:5]
                raise CaptureError(
                    f"no layer named {name!r} in {type(model).__name__}; closest valid names: "
                    + ", ".join(repr(c) for c in close)
                    + f" ({len(choices)} names in all: see xnn_support.capture.layer_names(model))")
        else:
            raise CaptureError(f"a layer must be a dotted name or an nn.Module, got {type(spec).__name__}")
        out[name] = named[name]
    return out


class Capture:
    """Holds hooks and captured tensors; use through :func:`capture`.

    After a forward, ``cap[name]`` (or ``cap.outputs[name]``) is the module's output and
    ``cap.inputs[name]`` its first positional input (when ``inputs=True``).
    """

    def __init__(self, model: nn.Module, layers, *, inputs: bool = False, detach: bool = True,
                 clone="auto", repeats: str = "error", stop: bool = False):
        V.choice("repeats", repeats, ("error", "warn", "all"))
        self.model = model
        self.modules = resolve_layers(model, layers)
        self.names = list(self.modules)
        self.want_inputs, self.detach, self.clone = inputs, detach, clone
        self.repeats, self.stop = repeats, stop
        V.choice("clone", clone, (True, False, "auto"))
        self.outputs: Dict[str, object] = {}
        self._versions: Dict[int, tuple] = {}   # id(tensor) -> (tensor, version) for lazy clones
        self.inputs: Dict[str, object] = {}
        self._calls: Dict[str, int] = {}
        self._depth = 0
        self._handles: List[torch.utils.hooks.RemovableHandle] = []
        self._truncating = False
        self._probing = False   # stop=True: the probe forward only counts calls (see _probe)
        self._probed = False
        self._no_stop = False   # a requested layer repeats and repeats != "error": never truncate

    # -- hook plumbing -----------------------------------------------------------------------
    def _prep(self, t):
        if torch.is_tensor(t):
            if self.detach:
                t = t.detach()
            if self.clone is True:
                return t.clone()
            if self.clone == "auto":
                self._versions[id(t)] = (t, t._version)
            return t
        if isinstance(t, (tuple, list)):
            return type(t)(self._prep(v) for v in t)
        if isinstance(t, dict):
            return {k: self._prep(v) for k, v in t.items()}
        return t

    @staticmethod
    def _repeat_msg(name: str, module: nn.Module, n: int) -> str:
        return (f"layer {name!r} ({type(module).__name__}) was called {n} times in one forward "
                "(a reused module); capture a distinct submodule, or pass repeats='all' to keep "
                "every call or repeats='warn' to keep the last")

    def _make_hook(self, name: str):
        def hook(module, args, output):
            n = self._calls.get(name, 0) + 1
            self._calls[name] = n
            if self._probing:
                return None
            out = self._prep(output)
            inp = self._prep(args[0]) if (self.want_inputs and args) else None
            if n > 1:
                msg = self._repeat_msg(name, module, n)
                if self.repeats == "error":
                    raise CaptureError(msg)
                if self.repeats == "warn":
                    warnings.warn(msg, RuntimeWarning, stacklevel=2)
                else:
                    self.outputs[name].append(out)
                    if self.want_inputs:
                        self.inputs[name].append(inp)
                    return None
            if self.repeats == "all":
                out, inp = [out], [inp]
            self.outputs[name] = out
            if self.want_inputs:
                self.inputs[name] = inp
            if self._truncating and all(k in self._calls for k in self.names):
                raise _StopForward()
            return None
        return hook

    def _enter(self, *_):
        """Pre-hook on the captured modules and their ancestors: a call at depth 0 starts a new
        forward (whether the user called the root or a submodule), which resets the call counts."""
        if self._depth == 0:
            self._calls, self._versions = {}, {}
        self._depth += 1

    def _leave(self, *_):
        self._depth = max(0, self._depth - 1)

    def _before_inplace(self, module, args):
        """An in-place module is about to run: copy any captured tensor it would overwrite."""
        if not self._versions or not args or not torch.is_tensor(args[0]):
            return None
        ptr = args[0].data_ptr()
        for store in (self.outputs, self.inputs):
            for k, v in store.items():
                if (torch.is_tensor(v) and id(v) in self._versions and v.data_ptr() == ptr
                        and v._version == self._versions[id(v)][1]):  # already changed: _check reports it
                    c = v.clone()
                    del self._versions[id(v)]
                    store[k] = c
        return None

    def _check(self, name, t):
        items = t if isinstance(t, (list, tuple)) else t.values() if isinstance(t, dict) else [t]
        for v in items:
            if torch.is_tensor(v) and id(v) in self._versions and v._version != self._versions[id(v)][1]:
                raise CaptureError(
                    f"the output of layer {name!r} was modified in place after it was captured (an "
                    "in-place operation in the model's forward, e.g. `out += identity`); use "
                    "capture(..., clone=True) to copy features at capture time")

    def attach(self) -> "Capture":
        if self._handles:
            return self
        try:
            for name, mod in self.modules.items():
                self._handles.append(mod.register_forward_hook(self._make_hook(name)))
            # depth tracking on the captured modules and their ancestors marks one forward
            named = dict(self.model.named_modules())
            scope = {""}
            for name in self.names:
                parts = name.split(".") if name else []
                scope.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
            for name in scope:
                mod = named[name]
                self._handles.append(mod.register_forward_pre_hook(self._enter))
                self._handles.append(mod.register_forward_hook(self._leave, always_call=True))
            if self.clone == "auto":
                for mod in self.model.modules():
                    if getattr(mod, "inplace", False) is True:
                        self._handles.append(mod.register_forward_pre_hook(self._before_inplace))
        except BaseException:
            self.remove()
            raise
        return self

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    # -- access ------------------------------------------------------------------------------
    def __getitem__(self, name):
        if isinstance(name, nn.Module):
            name = next(n for n, m in self.modules.items() if m is name)
        if name not in self.outputs:
            if name in self.modules:
                raise CaptureError(f"layer {name!r} did not run in the last forward")
            raise CaptureError(f"layer {name!r} was not requested; requested: {self.names}")
        out = self.outputs[name]
        if self._versions:
            self._check(name, out)
        return out

    def __contains__(self, name) -> bool:
        return name in self.outputs

    def _probe(self, args, kwargs) -> None:
        """``stop=True``, first forward: one whole forward without grad that only counts the calls of
        the requested layers; the RNG states and every buffer are restored afterwards. A repeated layer
        raises (``repeats="error"``) or switches truncation off (``"warn"``, ``"all"``)."""
        buffers = [b for b in self.model.buffers()]
        saved = [b.detach().clone() for b in buffers]
        cuda = sorted({t.device.index or 0 for t in list(self.model.parameters()) + buffers if t.is_cuda})
        self._calls, self._depth, self._truncating, self._probing = {}, 0, False, True
        try:
            with torch.random.fork_rng(devices=cuda), torch.no_grad():
                self.model(*args, **kwargs)
        finally:
            self._probing = False
            with torch.no_grad():
                for b, v in zip(buffers, saved):
                    b.copy_(v)
        self._probed = True
        repeated = {k: n for k, n in self._calls.items() if n > 1}
        self._calls = {}
        if repeated:
            k, n = next(iter(repeated.items()))
            if self.repeats == "error":
                raise CaptureError(self._repeat_msg(k, self.modules[k], n) + " (seen by the whole probe forward "
                                   "of capture(stop=True))")
            self._no_stop = True

    def forward(self, *args, **kwargs):
        """Run the model once; with ``stop=True`` stop after the last requested layer has fired
        (returns None then, else the model's output). With ``stop=True`` the first call is preceded
        by a whole probe forward that reports a layer called more than once (see the module docstring)."""
        if self.stop and not self._probed:
            self._probe(args, kwargs)
        self._calls, self._depth = {}, 0
        self._truncating = self.stop and not self._no_stop
        try:
            return self.model(*args, **kwargs)
        except _StopForward:
            return None
        finally:
            self._truncating = False

    def run(self, x: torch.Tensor, *, batch_size: Optional[int] = None, to_cpu: bool = True,
            grad: bool = False, progress: bool = False) -> Dict[str, torch.Tensor]:
        """Forward ``x`` in chunks of ``batch_size`` on the model's device; return
        ``{layer: features}`` concatenated over chunks (requires ``repeats != 'all'``)."""
        if self.repeats == "all":
            raise ValueError("Capture.run concatenates chunks; use repeats='error' or 'warn'")
        n = x.shape[0]
        if n == 0:
            raise ValueError("empty batch: x has 0 samples; pass at least one input")
        bs = n if batch_size is None else V.positive_int("batch_size", batch_size, optional=True)
        dev = device_of(self.model)
        chunks: Dict[str, List[torch.Tensor]] = {k: [] for k in self.names}
        starts = range(0, n, bs)
        if progress:
            starts = bar(starts, desc="capture", total=(n + bs - 1) // bs)
        with torch.set_grad_enabled(grad):
            for s in starts:
                self.outputs, self._versions = {}, {}
                self.forward(x[s:s + bs].to(dev))
                for k in self.names:
                    t = self[k]
                    chunks[k].append(t.cpu() if to_cpu else t)
        return {k: torch.cat(v) for k, v in chunks.items()}


@contextmanager
def capture(model: nn.Module, layers: Union[LayerSpec, Iterable[LayerSpec]], *, inputs: bool = False,
            detach: bool = True, clone="auto", repeats: str = "error", stop: bool = False):
    """Capture outputs (and optionally inputs) of ``layers`` of ``model``.

    >>> with capture(model, ["features.3", "features.8"]) as cap:
    ...     model(x)
    >>> cap["features.3"].shape

    ``detach=False`` keeps the autograd graph (for methods that differentiate through features).
    The hooks are removed on exit, whatever happens inside the block.
    """
    cap = Capture(model, layers, inputs=inputs, detach=detach, clone=clone, repeats=repeats, stop=stop)
    cap.attach()
    try:
        yield cap
    finally:
        cap.remove()

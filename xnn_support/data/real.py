"""Loader (and on-disk format) for real datasets converted by ``data_scripts/``.

Serves every paper's "real data" profile: CUB-200-2011 and Pascal-Part (papers 01, 02, 04, 05),
CelebA (paper 03), ModelNet40 (paper 06), SST-2 (paper 04). The embedded generators remain the
default; a notebook switches with one call::

    train = load_real("cub200", split="train", size=64)

This module never downloads and never imports ``data_scripts`` (the scripts import it: the file
format is defined once, here). A missing dataset raises ``FileNotFoundError`` naming the exact
command that makes it, e.g. ``python -m data_scripts fetch cub200 && python -m data_scripts
convert cub200``.

On-disk format, under ``<root>/<name>/converted/``: one conversion = ``<name>-<key>.pt`` (plain
tensors, read with ``torch.load(weights_only=True)``) + ``<name>-<key>.json`` (kind, options,
names, per-split ``spec``), where ``key`` hashes the resolved convert options. Images are stored as
uint8 and returned as float32 in [0, 1] (exact round trip for converter output). The JSON is
written last and atomically, so a present JSON means a complete conversion.

Option matching: ``load_real(name, **opts)`` loads the conversion whose options equal the
converter's defaults (recorded in the JSON) updated with ``opts``, exactly as
``python -m data_scripts convert name --opt value`` would have made it.

Root: the ``root`` argument, else ``$XNN_DATA``, else ``~/.cache/xnn/data``.
Deviation: CelebA landmarks and ModelNet40 normals have no field in :class:`FaceSet` /
:class:`PointCloudSet`; they are kept as "extras", returned with ``return_extras=True``.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import torch

from .types import FaceSet, ImageSet, PointCloudSet, TextSet

__all__ = ["load_real", "save_converted", "default_root", "available_conversions",
           "KNOWN_DATASETS", "FORMAT"]

FORMAT = "xnn-real/1"
KNOWN_DATASETS = ("cub200", "pascal_part", "celeba", "modelnet40", "modelnet40_off", "sst2")
_KINDS = {c.__name__: c for c in (ImageSet, FaceSet, PointCloudSet, TextSet)}


def default_root(root: Optional[os.PathLike] = None) -> Path:
    """``root`` if given, else ``$XNN_DATA``, else ``~/.cache/xnn/data`` (user-expanded)."""
    if root is None:
        root = os.environ.get("XNN_DATA") or "~/.cache/xnn/data"
    return Path(root).expanduser()


def _check_name(name: str) -> None:
    if name not in KNOWN_DATASETS:
        raise ValueError(f"unknown real dataset {name!r}; known: {', '.join(KNOWN_DATASETS)}")


def _plain(v):
    """JSON-normal form of an option value (tuples become lists)."""
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    return v


def option_key(options: Dict[str, Any]) -> str:
    """Short stable hash of resolved convert options (names the converted files)."""
    blob = json.dumps({k: _plain(v) for k, v in options.items()}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def _cli_value(v) -> str:
    if isinstance(v, (list, tuple)):
        return ",".join(str(x) for x in v)
    return str(v)


def _command(name: str, root: Path, explicit_root: bool, options: Dict[str, Any]) -> str:
    r = f" --root {root}" if explicit_root else ""
    opts = "".join(f" --{k.replace('_', '-')} {_cli_value(v)}" for k, v in options.items())
    return (f"python -m data_scripts fetch {name}{r} && "
            f"python -m data_scripts convert {name}{r}{opts}")


def _atomic_write(path: Path, write) -> None:
    tmp = path.with_name(path.name + ".part")
    write(tmp)
    os.replace(tmp, path)


# --------------------------------------------------------------------------- writing

def _pack(ds) -> Tuple[Dict[str, torch.Tensor], Dict[str, Any], Dict[str, Any]]:
    """Split a dataset into (tensors, json fields, per-sample json lists); images -> uint8."""
    tensors, fields, lists = {}, {}, {}
    for f in dataclasses.fields(ds):
        v = getattr(ds, f.name)
        if f.name == "spec" or v is None:
            continue
        if torch.is_tensor(v):
            v = v.detach().cpu()
            if f.name == "images" and v.dtype != torch.uint8:
                if v.numel() and (torch.isnan(v).any() or v.min() < 0 or v.max() > 1):
                    raise ValueError("images must be uint8 or float in [0, 1] without NaN")
                v = (v.float() * 255).round().to(torch.uint8)
            tensors[f.name] = v.contiguous()
        elif f.metadata.get("per_sample", False):
            lists[f.name] = v
        else:
            fields[f.name] = v
    return tensors, fields, lists


def save_converted(root: os.PathLike, name: str, datasets: Dict[str, Any], *,
                   options: Dict[str, Any], defaults: Dict[str, Any],
                   extras: Optional[Dict[str, Dict[str, Any]]] = None,
                   source: Optional[Dict[str, Any]] = None) -> Path:
    """Write one conversion (all splits) and return the path of its JSON.

    ``datasets`` maps split name -> dataset (one kind); ``extras`` maps split -> {name: tensor or
    JSON value}; ``options`` are the resolved convert options, ``defaults`` the converter's."""
    _check_name(name)
    if not datasets:
        raise ValueError("no splits to save")
    kinds = {type(d).__name__ for d in datasets.values()}
    if len(kinds) != 1 or next(iter(kinds)) not in _KINDS:
        raise ValueError(f"all splits must be one of {sorted(_KINDS)}, got {sorted(kinds)}")
    extras = extras or {}
    out = default_root(root) / name / "converted"
    out.mkdir(parents=True, exist_ok=True)
    stem = f"{name}-{option_key(options)}"
    blob, meta_splits = {"format": FORMAT, "splits": {}}, {}
    for split, ds in datasets.items():
        tensors, fields, lists = _pack(ds)
        ex = extras.get(split, {})
        ex_t = {k: v.detach().cpu().contiguous() for k, v in ex.items() if torch.is_tensor(v)}
        ex_j = {k: v for k, v in ex.items() if not torch.is_tensor(v)}
        blob["splits"][split] = {"tensors": tensors, "extras": ex_t}
        meta_splits[split] = {"n": len(ds), "spec": ds.spec, "fields": fields, "lists": lists,
                              "extras": ex_j}
    meta = {"format": FORMAT, "name": name, "kind": next(iter(kinds)),
            "options": {k: _plain(v) for k, v in options.items()},
            "defaults": {k: _plain(v) for k, v in defaults.items()},
            "source": source or {}, "data_file": stem + ".pt", "splits": meta_splits}
    _atomic_write(out / (stem + ".pt"), lambda p: torch.save(blob, p))
    _atomic_write(out / (stem + ".json"),
                  lambda p: p.write_text(json.dumps(meta, indent=1, sort_keys=True, default=str)))
    return out / (stem + ".json")


# --------------------------------------------------------------------------- reading

def available_conversions(name: str, root: Optional[os.PathLike] = None) -> List[Dict[str, Any]]:
    """The JSON metadata of every conversion of ``name`` under ``root`` (sorted by file name)."""
    _check_name(name)
    d = default_root(root) / name / "converted"
    metas = []
    for p in sorted(d.glob(f"{name}-*.json")) if d.is_dir() else []:
        try:
            m = json.loads(p.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if m.get("format") == FORMAT:
            m["_path"] = str(p)
            metas.append(m)
    return metas


def _normalise(v, like):
    """Bring a user-given option to the type of the recorded default (CLI-style strings too)."""
    if isinstance(like, list) and isinstance(v, str):
        v = [s.strip() for s in v.split(",") if s.strip()]
    elif isinstance(like, bool) or isinstance(v, bool):
        pass
    elif isinstance(like, int) and isinstance(v, str) and v.strip().lstrip("-").isdigit():
        v = int(v)
    elif isinstance(like, float) and isinstance(v, (int, str)):
        try:
            v = float(v)
        except ValueError:
            pass
    return _plain(v)


def load_real(name: str, *, root: Optional[os.PathLike] = None, split: str = "train",
              return_extras: bool = False, **convert_options):
    """Load split ``split`` of the converted real dataset ``name``.

    ``convert_options`` select the conversion (e.g. ``size=128``); unspecified ones take the
    converter's defaults. Returns the dataset (ImageSet, FaceSet, PointCloudSet or TextSet), or
    ``(dataset, extras)`` with ``return_extras=True``. Raises ``FileNotFoundError`` naming the
    fetch/convert command when the conversion is missing; ``ValueError`` for an unknown name,
    option or split. Never downloads."""
    _check_name(name)
    explicit_root = root is not None or bool(os.environ.get("XNN_DATA"))
    r = default_root(root)
    metas = available_conversions(name, r)
    if metas:
        known = set(metas[0]["defaults"])
        bad = sorted(set(convert_options) - known)
        if bad:
            raise ValueError(f"unknown convert option(s) {bad} for {name}; known: {sorted(known)}")
    chosen = None
    for m in metas:
        d = m["defaults"]
        wanted = dict(d, **{k: _normalise(v, d.get(k)) for k, v in convert_options.items()})
        if m["options"] == wanted:
            chosen = m
            break
    if chosen is None:
        msg = (f"real dataset {name!r} with options {convert_options or '(defaults)'} is not "
               f"converted under {r}. Run: {_command(name, r, explicit_root, convert_options)}")
        if metas:
            msg += "\nAvailable conversions: " + "; ".join(
                ", ".join(f"{k}={v}" for k, v in m["options"].items()) for m in metas)
        raise FileNotFoundError(msg)
    if split not in chosen["splits"]:
        raise ValueError(f"{name} has no split {split!r}; available: {sorted(chosen['splits'])}")
    pt = Path(chosen["_path"]).with_name(chosen["data_file"])
    if not pt.is_file():
        raise FileNotFoundError(f"{pt} is missing (partial conversion?). Run: "
                                f"{_command(name, r, explicit_root, convert_options)}")
    blob = torch.load(pt, map_location="cpu", weights_only=True)
    if blob.get("format") != FORMAT:
        raise ValueError(f"{pt} has format {blob.get('format')!r}, expected {FORMAT!r}")
    part, info = blob["splits"][split], chosen["splits"][split]
    kw = dict(part["tensors"])
    if "images" in kw and kw["images"].dtype == torch.uint8:
        kw["images"] = kw["images"].float().div_(255.0)
    kw.update(info["fields"])
    kw.update(info["lists"])
    kw["spec"] = info["spec"]
    ds = _KINDS[chosen["kind"]](**kw)
    if return_extras:
        return ds, dict(part["extras"], **info["extras"])
    return ds

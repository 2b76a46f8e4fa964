"""Fetch, verify and convert the real datasets of the xnn papers (network access lives here only).

Usage (from the repository root)::

    python -m data_scripts list
    python -m data_scripts fetch cub200 [--root DIR] [--force]
    python -m data_scripts verify cub200 [--root DIR]
    python -m data_scripts convert cub200 [--root DIR] [--size 64 --crop box ...]

then in Python ``xnn_support.data.real.load_real("cub200", split="train", size=64)``.

Modules: :mod:`.registry` (URLs, checksums, licenses, citations), :mod:`.fetch` (download,
checksum, safe extraction), :mod:`.common` (folders, options, image/coordinate helpers) and one
converter per dataset (:mod:`.cub200`, :mod:`.pascal_part`, :mod:`.celeba`, :mod:`.modelnet40`,
:mod:`.sst2`), each exposing ``OPTIONS`` and ``convert(raw, **options) -> ({split: dataset},
{split: extras})`` that returns the in-memory containers of :mod:`xnn_support.data.types`.
:func:`convert_dataset` runs a converter on ``<root>/<name>/raw`` and writes the result with
:func:`xnn_support.data.real.save_converted`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Tuple

from xnn_support.data.real import save_converted

from . import celeba, cub200, modelnet40, pascal_part, sst2
from .common import defaults_of, raw_dir, read_manifest, resolve_options
from .registry import REGISTRY

__all__ = ["CONVERTERS", "convert_dataset", "REGISTRY"]

# name -> (converter module, fixed keyword arguments of its convert())
CONVERTERS: Dict[str, Tuple[object, dict]] = {
    "cub200": (cub200, {}),
    "pascal_part": (pascal_part, {}),
    "celeba": (celeba, {}),
    "modelnet40": (modelnet40, {"layout": "resampled"}),
    "modelnet40_off": (modelnet40, {"layout": "off"}),
    "sst2": (sst2, {}),
}


def convert_dataset(name: str, root=None, **options) -> Path:
    """Convert ``<root>/<name>/raw`` with the converter's options; return the written JSON path.
    Images are kept as uint8 until written (a full CelebA would not fit in memory as float)."""
    if name not in CONVERTERS:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(CONVERTERS)}")
    mod, fixed = CONVERTERS[name]
    opts = resolve_options(mod.OPTIONS, options)
    raw = raw_dir(name, root)
    if not raw.is_dir():
        raise FileNotFoundError(f"{name} is not fetched ({raw} does not exist). Run: "
                                f"python -m data_scripts fetch {name} --root {raw.parent.parent}")
    source = read_manifest(name, root)
    datasets, extras = mod.convert(raw, float_images=False, source=source, **fixed, **opts)
    return save_converted(raw.parent.parent, name, datasets, options=opts,
                          defaults=defaults_of(mod.OPTIONS), extras=extras, source=source)

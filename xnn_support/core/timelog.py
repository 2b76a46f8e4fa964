"""Spans of work that a run's time profile can tell apart (``xnn reproduce --profile-time``).

The runner points ``$XNN_TIME_LOG`` at ``OUT/NN_name.time.jsonl`` while a notebook runs; code that does a
kind of work the profile should separate wraps it in :func:`span` (today :func:`~.train.fit` around an
actual training, not a cache hit). Each span appends one JSON line ``{"kind", "name", "start", "end",
"pid"}`` (seconds since the epoch) when it ends, so spans from worker processes of the notebook land in
the same file. Without the variable a span costs one dictionary lookup and writes nothing.
:func:`~xnn_support.run.timing.cell_times` intersects the spans with each cell's papermill start and end.
"""
from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path
from typing import Dict, Iterator, List

__all__ = ["ENV", "span", "read_spans"]

ENV = "XNN_TIME_LOG"


@contextlib.contextmanager
def span(kind: str, name: str = "") -> Iterator[None]:
    """Time the enclosed block as one span of ``kind`` (e.g. ``"training"``) named ``name``; written to
    ``$XNN_TIME_LOG`` when set, also when the block raises."""
    path = os.environ.get(ENV, "").strip()
    if not path:
        yield
        return
    t0 = time.time()
    try:
        yield
    finally:
        line = json.dumps({"kind": str(kind), "name": str(name), "start": t0, "end": time.time(),
                           "pid": os.getpid()})
        try:  # one short O_APPEND write per span: lines from several processes do not interleave
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, (line + "\n").encode())
            finally:
                os.close(fd)
        except OSError:  # a profile is never worth failing the computation for
            pass


def read_spans(path) -> List[Dict]:
    """The spans in a time log (missing file: none; a torn or foreign line is skipped)."""
    path = Path(path)
    if not path.is_file():
        return []
    out = []
    for ln in path.read_text(errors="replace").splitlines():
        try:
            d = json.loads(ln)
            out.append({"kind": str(d["kind"]), "name": str(d.get("name", "")), "start": float(d["start"]),
                        "end": float(d["end"])})
        except (ValueError, KeyError, TypeError):
            continue
    return out

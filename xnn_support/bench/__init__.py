"""``xnn bench``: side-by-side benchmarks, ours against a reference, with a ratio column.

:mod:`.registry` holds :class:`Row`, :func:`benchmark`, the timers and :func:`plugins` (which finds
every ``papers/*/bench.py`` by itself); :mod:`.core` and :mod:`.train` are the core rows.
"""
from .registry import (Row, TinyConvNet, benchmark, format_table, one_thread, op_profile, paired,  # noqa: F401
                       plugins, run_benchmarks, timeit)
from .registry import _REGISTRY  # noqa: F401

__all__ = ["Row", "benchmark", "run_benchmarks", "format_table", "timeit", "paired", "one_thread", "plugins",
           "TinyConvNet", "op_profile"]

"""``xnn bench`` rows of notebook 10: ours against a reference (a floor or a faithful loop of the
official code), side by side; register each with ``@benchmark("attribution/...")``."""
from __future__ import annotations

from ...bench import Row, benchmark, one_thread, paired  # noqa: F401

"""xnn_support: the computation behind the xnn notebooks. The folder listing is the architecture
(imports point down only; ARCHITECTURE.md draws it)::

    run/        catalog, runner, claims, report, cli        the ``xnn`` command
    bench/      registry + core rows; finds every papers/*/bench.py by itself
    widgets.py  viz/      widgets and figures (may import papers; never imported by them)
    papers/     one subpackage per paper: method, metrics, experiments, bench
    sigma/      the one sigma engine (pixels, words, points)
    data/ models/         planted-truth data, real photos, the model zoo
    core/       capture, ledger, utils, validate, train + cache, predict, augment

The public core is re-exported here; paper subpackages are imported by name
(``from xnn_support.papers import icnn``). Old flat paths (``xnn_support.icnn``) still import for
one release, with a DeprecationWarning (see :mod:`xnn_support.core.compat`).
"""
from .core.version import __version__  # noqa: F401
from .core.capture import capture, Capture, CaptureError, resolve_layers  # noqa: F401
from .core.ledger import record, results_table, set_ledger, ledger_path  # noqa: F401
from .core.utils import seed_everything, device_of, progress  # noqa: F401
from .core import compat as _compat
from .core.malloc import tune_malloc as _tune_malloc

_tune_malloc()  # freed tensors stay in the process: see xnn_support.core.malloc

_compat.install(__name__)

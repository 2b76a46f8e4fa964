"""The shared core: everything the paper subpackages build on, knowing no paper.

``capture`` (hooks by dotted layer name), ``ledger`` (``record``), ``utils`` (seeds, devices,
progress, thread limits, ``mean_sd``), ``validate`` (the one argument-checking helper), ``train`` +
``cache`` (one trainer, one checkpoint cache), ``predict``, ``augment``, ``version``.
"""
from .version import __version__  # noqa: F401
from .capture import capture, Capture, CaptureError, resolve_layers, layer_names  # noqa: F401
from .ledger import record, results_table, set_ledger, ledger_path, read_ledger  # noqa: F401
from .utils import seed_everything, device_of, progress, quiet, to_device  # noqa: F401

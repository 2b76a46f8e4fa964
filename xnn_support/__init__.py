"""xnn_support: the computation behind the xnn notebooks.

Layers (imports point down only)::

    notebooks/NN_*.ipynb  ->  method modules (explanatory_graph, icnn, semantic,
                              discarding, consistency, pointcloud)
                          ->  core: capture, record, utils (seed/device/progress),
                              train (trainer + checkpoint cache), data, models
    viz.py / widgets.py   figures and widgets (may import methods; never imported by them)
    cli.py -> runner.py -> report.py, bench.py   the ``xnn`` command

The public core is re-exported here; method modules are imported by name.
"""
__version__ = "0.1.0"

from .capture import capture, Capture, CaptureError, resolve_layers  # noqa: E402,F401
from .ledger import record, results_table, set_ledger, ledger_path  # noqa: E402,F401
from .utils import seed_everything, device_of, progress  # noqa: E402,F401

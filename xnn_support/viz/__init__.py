"""All plotting of the suite. Every function returns a matplotlib ``Figure`` and never calls
``plt.show()``; method modules import nothing from here, notebooks and :mod:`xnn_support.widgets` do.

One flat namespace (``viz.image_grid``, ``viz.graph_by_layer``, ...) over one module per paper:
``_base`` (data sets, feature maps, training curves, bars), ``graph`` (01), ``icnn`` (02),
``semantic`` (03), ``discarding`` (04), ``consistency`` (05), ``pointcloud`` (06); a new paper's module
(``xnn new``) joins the namespace by itself: every module here is imported and its public names exported (as ``import *``).
"""
import importlib as _importlib
import pkgutil as _pkgutil

from ._base import *  # noqa: F401,F403
from ._base import PART_COLORS, _detached, _grid, _np_img  # noqa: F401

for _m in sorted(m.name for m in _pkgutil.iter_modules(__path__) if not m.name.startswith("_")):
    _mod = _importlib.import_module(f".{_m}", __name__)
    _names = getattr(_mod, "__all__", None) or [n for n in vars(_mod) if not n.startswith("_")]  # as import *
    globals().update({_n: getattr(_mod, _n) for _n in _names})
del _m, _mod, _names

"""All plotting of the suite. Every function returns a matplotlib ``Figure`` and never calls
``plt.show()``; method modules import nothing from here, notebooks and :mod:`xnn_support.widgets` do.

One flat namespace (``viz.image_grid``, ``viz.graph_by_layer``, ...) over one module per paper:
``_base`` (data sets, feature maps, training curves, bars), ``graph`` (01), ``icnn`` (02),
``semantic`` (03), ``discarding`` (04), ``consistency`` (05), ``pointcloud`` (06).
"""
from ._base import *  # noqa: F401,F403
from ._base import PART_COLORS, _detached, _grid, _np_img  # noqa: F401
from .graph import *  # noqa: F401,F403  (01)
from .icnn import *  # noqa: F401,F403  (02)
from .semantic import *  # noqa: F401,F403  (03)
from .discarding import *  # noqa: F401,F403  (04)
from .consistency import *  # noqa: F401,F403  (05)
from .pointcloud import *  # noqa: F401,F403  (06)

"""Notebook 02: interpretable CNNs (Zhang, Wu, Zhu, CVPR 2018). ``method`` is the interpretable conv
layer and its filter loss, ``metrics`` location instability and part IoU, ``experiments`` the grid."""
from .method import *  # noqa: F401,F403
from .metrics import *  # noqa: F401,F403

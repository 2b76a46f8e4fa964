"""Notebook 01: the explanatory graph (Zhang et al., AAAI 2018). ``method`` mines the graph,
``metrics`` evaluates it, ``experiments`` is the notebook's protocol, ``loop`` the reference E step."""
from .method import *  # noqa: F401,F403
from .metrics import *  # noqa: F401,F403

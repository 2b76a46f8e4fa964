"""Notebook 04: information discarding (Guan et al., ICML 2019; Ma et al., ICML 2022). ``method`` is
pixel- and layer-wise discarding, ``text`` word-wise discarding, ``experiments`` the notebook's studies."""
from .method import *  # noqa: F401,F403

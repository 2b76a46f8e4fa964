"""Notebook 05: knowledge consistency (Liang et al., ICLR 2020). ``method`` fits and decomposes,
``net`` is the consistency network, ``experiments`` the notebook's protocols."""
from .method import *  # noqa: F401,F403

"""Notebook 05: knowledge consistency (Liang et al., ICLR 2020). ``method`` fits and decomposes,
``net`` is the consistency network, ``experiments`` the tools of the paper's experiments, ``studies``
the notebook's protocols over seeds, settings and splits."""
from .method import *  # noqa: F401,F403

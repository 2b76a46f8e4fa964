"""Notebook 09: network transplanting by back-distillation (Zhang, Yang, Yu, Wu, Zhu; arXiv 1804.10272, AAAI-19
workshop), reconstructed from the authors' text (no official code). ``network`` holds the generic network's
modules (category modules, task modules, adapters, the planted map), ``method`` the entry point
:func:`transplant` and its losses, ``metrics`` the evaluation, ``experiments`` the notebook's protocol, ``bench``
its ``xnn bench`` rows."""
from .method import *  # noqa: F401,F403
from .metrics import *  # noqa: F401,F403
from .network import *  # noqa: F401,F403

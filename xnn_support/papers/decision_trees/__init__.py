"""Notebook 07: interpreting CNNs via decision trees (Zhang, Yang, Ma, Wu, CVPR 2019), reconstructed from the
paper (no official code). ``method`` holds the rationales, the tree and its explanations (the engine of the
greedy merging is ``greedy``), ``metrics`` the evaluation per depth, ``planted`` the planted-mode data,
``experiments`` the notebook's protocol, ``bench`` its ``xnn bench`` rows."""
from .method import *  # noqa: F401,F403
from .metrics import *  # noqa: F401,F403

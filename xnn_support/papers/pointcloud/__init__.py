"""Notebook 06: utilities of point-cloud architectures (Shen et al., CVPR 2021). ``method`` holds the
three metrics and their estimators, ``experiments`` the with/without study."""
from .method import *  # noqa: F401,F403

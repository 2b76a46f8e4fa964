"""Notebook 03: semantic quantification (Chen et al., ICCV 2019) and dataset bias (Zhang et al., AAAI
2018). ``method`` is the distilled explainer, ``scores`` the frozen nets' scores, ``experiments`` the
faces protocols."""
from .method import *  # noqa: F401,F403

"""Notebook 08: explainer networks (Zhang, Yang, Liu, Wu, Zhu, arXiv 1805.07468 / AAAI-19 WS), reconstructed
(no official code). ``net`` holds the explainer's modules (two tracks, the norm that makes p meaningful, the
mixing, the decoders), ``method`` the loss, the training by distillation (:func:`fit_explainer_net`) and the
replacement of the performer's features, ``metrics`` the evaluation, ``planted`` the planted part-share targets,
``experiments`` the notebook's protocol, ``bench`` its ``xnn bench`` row."""
from .method import *  # noqa: F401,F403
from .metrics import *  # noqa: F401,F403

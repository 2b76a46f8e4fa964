"""Notebook 10: evaluating attribution maps (coherency across layers and networks, generality) as falsifiable
tests. ``method`` the function-preserving reparameterisations R1-R10 (``reparameterise``, float64 checked),
``maps`` the Captum baselines and the sigma engine's entropy maps (mse / channel_std / whitened metrics),
``metrics`` the coherency table beside the spec's predictions (``coherency_table``), ``planted`` the E-layer,
``secondopinion`` Quantus' metrics, ``experiments`` the notebook's protocol, ``bench`` its ``xnn bench`` rows."""
from .maps import *  # noqa: F401,F403
from .method import *  # noqa: F401,F403
from .metrics import *  # noqa: F401,F403
from .planted import *  # noqa: F401,F403

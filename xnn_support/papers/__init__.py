"""One subpackage per paper, each with the same roles: ``method`` (the paper's algorithm, with the
citation docstring), ``metrics`` (its evaluation), ``experiments`` (the notebook's protocol, returning
tidy tables), ``bench`` (its ``xnn bench`` rows, found by :mod:`xnn_support.bench` by itself).

==============  =====================================================  ========
subpackage      paper                                                  notebook
==============  =====================================================  ========
``graph``       explanatory graph (Zhang et al., AAAI 2018)            01
``icnn``        interpretable CNNs (Zhang, Wu, Zhu, CVPR 2018)         02
``semantic``    semantic quantification + dataset bias (ICCV19/AAAI18) 03
``discarding``  information discarding (ICML 2019 / ICML 2022)         04
``consistency`` knowledge consistency (Liang et al., ICLR 2020)        05
``pointcloud``  point-cloud architecture utilities (CVPR 2021)         06
==============  =====================================================  ========
"""

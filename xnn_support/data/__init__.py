"""Embedded datasets with planted ground truth, and loaders for converted real datasets.

Generators (all deterministic from ``seed``; no network):

* :func:`creatures` -- 2D part-based creatures with landmarks, part masks, fg masks (papers 01, 02, 04, 05).
* :func:`concept_faces` -- cartoon faces with attributes and a planted target (paper 03).
* :func:`digits3d`, :func:`shapes3d`, :func:`parts3d` -- point clouds (paper 06).
* :func:`sentiment_corpus`, :func:`plain_sentences` -- text with planted key words (paper 04).
* :func:`real_photos` -- a few real colour photos shipped by skimage/sklearn, coarse masks, labels.
* :func:`load_real` -- a real dataset converted by ``data_scripts/`` (clear error if missing).
"""
from .types import ImageSet, FaceSet, PointCloudSet, TextSet, subset, fingerprint  # noqa: F401
from .creatures import creatures  # noqa: F401
from .faces import concept_faces, edit_faces, render_faces, ConceptFaceSet  # noqa: F401
from .clouds import digits3d, shapes3d, parts3d  # noqa: F401
from .text import sentiment_corpus, plain_sentences, templated_sentences, encode  # noqa: F401
from .real import load_real  # noqa: F401
from .photos import real_photos, PhotoSet  # noqa: F401

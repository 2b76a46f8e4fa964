"""Registry of the real datasets that ``data_scripts`` can fetch and convert.

One :class:`Dataset` per name: the files to download (each a :class:`Resource`, possibly with
byte-identical mirror URLs), their checksums, the license note and the citation. Modelled on d2l's ``DATA_HUB[name] = (url, sha1)``.

Checksums. A value is filled in only where it is published by the dataset authors or by a widely
used loader (torchvision, torchtext) or corroborated by several independent public pins; each is
commented with its provenance. Where no value is known it is ``None`` with the comment "fill in
after the first verified download": ``python -m data_scripts verify NAME`` prints the computed
SHA-256 so that it can be pinned here. MD5 values are kept because they are what the maintainers of
those loaders publish; a download is accepted only when every known checksum matches.

Design notes: this module holds data only (no network, no file system access) so that tests and
``xnn_support.data.real`` can read it cheaply; :mod:`data_scripts.fetch` does the work.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Tuple

__all__ = ["Resource", "Dataset", "REGISTRY", "get"]


@dataclass(frozen=True)
class Resource:
    """One downloadable file.

    ``urls`` are byte-identical mirrors tried in order; ``extract`` says whether it is an archive
    (zip, tar, tar.gz, tgz) to unpack into ``raw/``, else it is copied there as is; ``include``
    restricts extraction to members under these path prefixes (e.g. only ``JPEGImages``)."""
    filename: str
    urls: Tuple[str, ...]
    sha256: Optional[str] = None
    md5: Optional[str] = None
    extract: bool = True
    include: Tuple[str, ...] = ()
    size_note: str = ""


@dataclass(frozen=True)
class Dataset:
    """A fetchable dataset: every resource is needed; ``manual`` says what to do by hand when the
    scripted download fails ({downloads} and {raw} are filled in with the folders)."""
    name: str
    title: str
    resources: Tuple[Resource, ...]
    homepage: str
    license: str
    citation: str
    manual: str = ""


_GDRIVE = "https://drive.usercontent.google.com/download?id={}&export=download&confirm=t"

REGISTRY: Dict[str, Dataset] = {}


def _add(ds: Dataset) -> None:
    REGISTRY[ds.name] = ds


_add(Dataset(
    name="cub200",
    title="Caltech-UCSD Birds-200-2011 (CUB-200-2011)",
    resources=(Resource(
        filename="CUB_200_2011.tgz",
        urls=("https://data.caltech.edu/records/65de6-vp158/files/CUB_200_2011.tgz?download=1",
              "https://s3.amazonaws.com/fast-ai-imageclas/CUB_200_2011.tgz"),
        sha256=None,  # fill in after the first verified download
        md5="97eceeb196236b17998738112f37df78",  # published by many CUB loaders (Cub2011 et al.)
        size_note="1.1 GB"),),
    homepage="https://www.vision.caltech.edu/datasets/cub_200_2011/",
    license="Images from Flickr; for non-commercial research and educational use (Caltech terms).",
    citation="C. Wah, S. Branson, P. Welinder, P. Perona, S. Belongie. The Caltech-UCSD "
             "Birds-200-2011 Dataset. Caltech CNS-TR-2011-001, 2011.",
))

_add(Dataset(
    name="pascal_part",
    title="Pascal-Part annotations on PASCAL VOC 2010 images",
    resources=(
        Resource(
            filename="trainval.tar.gz",
            urls=("http://roozbehm.info/pascal-parts/trainval.tar.gz",
                  "http://www.stat.ucla.edu/~xianjie.chen/pascal_part_dataset/trainval.tar.gz"),
            sha256=None,  # fill in after the first verified download
            md5=None,     # none published
            size_note="80 MB"),
        Resource(
            filename="VOCtrainval_03-May-2010.tar",
            urls=("http://host.robots.ox.ac.uk/pascal/VOC/voc2010/VOCtrainval_03-May-2010.tar",),
            sha256=None,  # fill in after the first verified download
            md5="da459979d0c395079b5c75ee67908abb",  # torchvision.datasets.VOCSegmentation
            include=("VOCdevkit/VOC2010/JPEGImages/", "VOCdevkit/VOC2010/ImageSets/Main/"),
            size_note="1.3 GB"),
    ),
    homepage="http://roozbehm.info/pascal-parts/pascal-parts.html",
    license="Annotations for research use (see the Pascal-Part page); VOC images are Flickr "
            "images subject to Flickr's terms of use.",
    citation="X. Chen, R. Mottaghi, X. Liu, S. Fidler, R. Urtasun, A. Yuille. Detect What You Can: "
             "Detecting and Representing Objects using Holistic Models and Body Parts. CVPR 2014. "
             "M. Everingham et al. The PASCAL Visual Object Classes (VOC) Challenge. IJCV 2010.",
))

_add(Dataset(
    name="celeba",
    title="CelebA, aligned and cropped faces with 40 attributes",
    resources=(
        Resource(filename="img_align_celeba.zip", urls=(_GDRIVE.format("0B7EVK8r0v71pZjFTYXZWM3FlRnM"),),
                 md5="00d2c5bc6d35e252742224ab0c1e8fcb",  # torchvision.datasets.CelebA
                 sha256=None,  # fill in after the first verified download
                 size_note="1.4 GB"),
        Resource(filename="list_attr_celeba.txt", urls=(_GDRIVE.format("0B7EVK8r0v71pblRyaVFSWGxPY0U"),),
                 md5="75e246fa4810816ffd6ee81facbd244c", extract=False),  # torchvision
        Resource(filename="list_eval_partition.txt", urls=(_GDRIVE.format("0B7EVK8r0v71pY0NSMzRuSXJEVkk"),),
                 md5="d32c9cbf5e040fd4025c592c306e6668", extract=False),  # torchvision
        Resource(filename="list_landmarks_align_celeba.txt",
                 urls=(_GDRIVE.format("0B7EVK8r0v71pd0FJY3Blby1HUTQ"),),
                 md5="cc24ecafdb5b50baae59b03474781f8c", extract=False),  # torchvision
    ),
    homepage="https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html",
    license="Non-commercial research purposes only (CelebA agreement); images are not owned by CUHK.",
    citation="Z. Liu, P. Luo, X. Wang, X. Tang. Deep Learning Face Attributes in the Wild. ICCV 2015.",
    manual="Google Drive often refuses scripted downloads (quota). Download the four files from the "
           "homepage (Align&Cropped images, Anno/, Eval/) by hand into {downloads} and rerun fetch.",
))

_add(Dataset(
    name="modelnet40",
    title="ModelNet40, 10,000 points with normals per shape (PointNet++ resampling)",
    resources=(Resource(
        filename="modelnet40_normal_resampled.zip",
        urls=("https://shapenet.cs.stanford.edu/media/modelnet40_normal_resampled.zip",),
        sha256=None,  # fill in after the first verified download
        md5=None,     # none published
        size_note="1.6 GB"),),
    homepage="https://modelnet.cs.princeton.edu/",
    license="Academic research only (ModelNet terms); CAD models belong to their authors.",
    citation="Z. Wu et al. 3D ShapeNets: A Deep Representation for Volumetric Shapes. CVPR 2015. "
             "C. R. Qi, L. Yi, H. Su, L. J. Guibas. PointNet++. NeurIPS 2017 (resampled version).",
    manual="The Stanford host has been offline at times. Put a copy of "
           "modelnet40_normal_resampled.zip into {downloads} and rerun fetch, or extract any copy "
           "of the folder modelnet40_normal_resampled/ into {raw}; or use `modelnet40_off`, the "
           "official Princeton meshes.",
))

_add(Dataset(
    name="modelnet40_off",
    title="ModelNet40 official OFF meshes (Princeton); points are sampled on the surfaces",
    resources=(Resource(
        filename="ModelNet40.zip",
        urls=("https://modelnet.cs.princeton.edu/ModelNet40.zip",
              "http://modelnet.cs.princeton.edu/ModelNet40.zip"),
        # corroborated by several independent public pins of the Princeton archive
        sha256="42dc3e656932e387f554e25a4eb2cc0e1a1bd3ab54606e2a9eae444c60e536ac",
        md5=None,
        size_note="0.4 GB"),),
    homepage="https://modelnet.cs.princeton.edu/",
    license="Academic research only (ModelNet terms); CAD models belong to their authors.",
    citation="Z. Wu et al. 3D ShapeNets: A Deep Representation for Volumetric Shapes. CVPR 2015.",
))

_add(Dataset(
    name="sst2",
    title="SST-2 (GLUE version): binary sentence sentiment",
    resources=(Resource(
        filename="SST-2.zip",
        urls=("https://dl.fbaipublicfiles.com/glue/data/SST-2.zip",),
        sha256=None,  # fill in after the first verified download
        md5="9f81648d4199384278b86e315dac217c",  # torchtext.datasets.SST2
        size_note="7 MB"),),
    homepage="https://gluebenchmark.com/tasks",
    license="Research use; see the Stanford Sentiment Treebank and GLUE terms.",
    citation="R. Socher et al. Recursive Deep Models for Semantic Compositionality Over a Sentiment "
             "Treebank. EMNLP 2013. A. Wang et al. GLUE. ICLR 2019.",
))


def get(name: str) -> Dataset:
    """The registry entry for ``name``; a ``ValueError`` listing the known names otherwise."""
    if name not in REGISTRY:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(sorted(REGISTRY))}")
    return REGISTRY[name]

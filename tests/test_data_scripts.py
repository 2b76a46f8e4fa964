"""Tests of data_scripts/ (fetch, verify, safe extraction, converters) and xnn_support.data.real.

Every converter runs on a tiny fixture written here, in tmp_path, in that dataset's real on-disk
layout (PIL images, scipy.io.savemat structs, plain text). No network: downloads use file:// URLs
or a patched urlopen.
"""
from __future__ import annotations

import ast
import hashlib
import json
import sys
import tarfile
import urllib.error
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

if str(Path(__file__).resolve().parents[1]) not in sys.path:      # data_scripts is not installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import data_scripts  # noqa: E402
from archives import make_tar
from data_scripts import __main__ as cli
from data_scripts import celeba, common, cub200, fetch, modelnet40, pascal_part, registry, sst2
from xnn_support.data import real
from xnn_support.data.types import FaceSet, ImageSet, PointCloudSet, TextSet

RED, BLUE = (255, 0, 0), (0, 0, 255)


def _img(path: Path, w: int, h: int, left=RED, right=BLUE, fmt="JPEG"):
    a = np.zeros((h, w, 3), np.uint8)
    a[:, : w // 2] = left
    a[:, w // 2:] = right
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(a).save(path, fmt, quality=95)


def _write(path: Path, text: str):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


# =========================================================================== CUB-200-2011

def make_cub(raw: Path) -> Path:
    b = raw / "CUB_200_2011"
    files = {1: "001.Black_footed_Albatross/Black_Footed_Albatross_0001_1.jpg",
             2: "001.Black_footed_Albatross/Black_Footed_Albatross_0002_2.jpg",
             3: "002.Laysan_Albatross/Laysan_Albatross_0001_3.jpg",
             4: "002.Laysan_Albatross/Laysan_Albatross_0002_4.jpg"}
    for i, f in files.items():
        _img(b / "images" / f, *((40, 20) if i == 1 else (30, 30)))
    _write(b / "images.txt", "".join(f"{i} {f}\n" for i, f in files.items()))
    # deliberately out of order: the converter must align by image id
    _write(b / "image_class_labels.txt", "4 2\n3 2\n2 1\n1 1\n")
    _write(b / "classes.txt", "1 001.Black_footed_Albatross\n2 002.Laysan_Albatross\n")
    _write(b / "train_test_split.txt", "1 1\n2 0\n3 1\n4 0\n")
    _write(b / "bounding_boxes.txt", "1 10.0 5.0 20.0 10.0\n2 0.0 0.0 30.0 30.0\n"
                                     "3 3.0 3.0 20.0 20.0\n4 0.0 0.0 30.0 30.0\n")
    _write(b / "parts" / "parts.txt", "1 back\n2 beak\n3 left eye\n")
    locs = ["1 1 19.5 9.5 1", "1 2 0.0 0.0 0", "1 3 0.0 0.0 1"]
    locs += [f"{i} {p} 15.0 15.0 1" for i in (2, 3, 4) for p in (1, 2, 3)]
    _write(b / "parts" / "part_locs.txt", "\n".join(locs) + "\n")
    return raw


def test_cub_whole_image_labels_landmarks_boxes(tmp_path):
    out, extras = cub200.convert(make_cub(tmp_path / "raw"), size=10)
    tr, te = out["train"], out["test"]
    assert isinstance(tr, ImageSet) and tr.images.shape == (2, 3, 10, 10)
    assert tr.images.dtype == torch.float32 and 0 <= tr.images.min() and tr.images.max() <= 1
    assert tr.labels.tolist() == [0, 1] and te.labels.tolist() == [0, 1]
    assert tr.class_names == ["Black_footed_Albatross", "Laysan_Albatross"]
    assert tr.landmark_names == ["back", "beak", "left eye"]
    # image 1 is 40 x 20, red left / blue right: orientation survives the resize
    assert tr.images[0, 0, :, :4].mean() > 0.85 and tr.images[0, 2, :, :4].mean() < 0.15
    assert tr.images[0, 2, :, 6:].mean() > 0.85
    lm = tr.landmarks[0]
    assert torch.allclose(lm[0], torch.tensor([4.5, 4.5]))       # image centre -> output centre
    assert torch.isnan(lm[1]).all()                                 # invisible -> NaN
    assert torch.allclose(lm[2], torch.tensor([-0.25, -0.375]))   # pixel-centre mapping
    # box x=10 y=5 w=20 h=10 on a 40 x 20 image -> (row0, col0, row1, col1) in the 10 x 10 output
    assert torch.allclose(tr.boxes[0], torch.tensor([2.5, 2.5, 7.5, 7.5]))
    assert extras["train"]["source_size_wh"][0].tolist() == [40, 20]
    assert tr.spec["split"] == "train" and tr.spec["options"]["size"] == 10


def test_cub_box_crop_drops_outside_landmarks_and_filters_classes(tmp_path):
    raw = make_cub(tmp_path / "raw")
    out, _ = cub200.convert(raw, size=10, crop="box")
    lm = out["train"].landmarks[0]
    assert torch.allclose(lm[0], torch.tensor([4.5, 4.5]))   # still the centre of the box
    assert torch.isnan(lm[2]).all()                            # outside the crop -> NaN
    assert torch.allclose(out["train"].boxes[0], torch.tensor([0.0, 0.0, 10.0, 10.0]))
    one, _ = cub200.convert(raw, size=10, num_classes=1)
    assert one["train"].labels.tolist() == [0] and one["train"].class_names == ["Black_footed_Albatross"]
    with pytest.raises(ValueError, match="num_classes"):
        cub200.convert(raw, size=10, num_classes=3)
    with pytest.raises(ValueError, match="size"):
        cub200.convert(raw, size=0)
    with pytest.raises(ValueError, match="unknown option"):
        cub200.convert(raw, sise=10)


def test_cub_missing_files_name_the_fetch_command(tmp_path):
    with pytest.raises(FileNotFoundError, match="python -m data_scripts fetch cub200"):
        cub200.convert(tmp_path / "nothing", size=10)
    raw = make_cub(tmp_path / "raw")
    (raw / "CUB_200_2011" / "parts" / "part_locs.txt").unlink()
    with pytest.raises(FileNotFoundError, match="part_locs.txt"):
        cub200.convert(raw, size=10)


# =========================================================================== Pascal-Part

def _struct(records, fields):
    arr = np.empty((1, len(records)), dtype=[(f, object) for f in fields])
    for i, r in enumerate(records):
        for f in fields:
            arr[0, i][f] = r[f]
    return arr


def _obj(cls, ind, mask, parts):
    p = (_struct([{"part_name": n, "mask": m.astype(np.uint8)} for n, m in parts],
                 ["part_name", "mask"]) if parts else np.zeros((0, 0)))
    return {"class": cls, "class_ind": np.array([[ind]]), "mask": mask.astype(np.uint8), "parts": p}


def _box(h, w, r0, r1, c0, c1):
    m = np.zeros((h, w), bool)
    m[r0:r1, c0:c1] = True
    return m


def make_pascal(raw: Path) -> Path:
    from scipy.io import savemat

    voc = raw / "VOCdevkit" / "VOC2010"
    h, w = 40, 60
    bird = _box(h, w, 10, 30, 20, 50)
    head, leye = _box(h, w, 10, 15, 20, 30), _box(h, w, 11, 12, 22, 23)
    torso, person = _box(h, w, 15, 30, 20, 50), _box(h, w, 0, 5, 0, 5)
    images = {
        "2008_000001": [_obj("bird", 3, bird, [("head", head), ("leye", leye), ("torso", torso)]),
                        _obj("person", 15, person, [("head", person)])],
        "2008_000002": [_obj("cat", 8, _box(h, w, 5, 35, 5, 55),
                             [("head", _box(h, w, 5, 15, 5, 20)), ("lfleg", _box(h, w, 25, 35, 5, 10))]),
                        _obj("cat", 8, _box(h, w, 0, 4, 0, 4), [])],
        "2008_000003": [_obj("bird", 3, _box(h, w, 0, 3, 0, 3), [("tail", _box(h, w, 0, 1, 0, 1))]),
                        _obj("car", 7, _box(h, w, 20, 40, 0, 40),
                             [("wheel_1", _box(h, w, 35, 40, 0, 5)), ("wheel_2", _box(h, w, 35, 40, 30, 35))])],
    }
    for name, objs in images.items():
        _img(voc / "JPEGImages" / f"{name}.jpg", w, h)
        path = raw / "Annotations_Part" / f"{name}.mat"
        path.parent.mkdir(parents=True, exist_ok=True)
        savemat(str(path), {"anno": {"imname": name, "objects": _struct(
            objs, ["class", "class_ind", "mask", "parts"])}})
    _write(voc / "ImageSets" / "Main" / "train.txt", "2008_000001\n2008_000003\n")
    _write(voc / "ImageSets" / "Main" / "val.txt", "2008_000002\n")
    return raw


def test_pascal_part_merged_parts_masks_landmarks(tmp_path):
    out, extras = pascal_part.convert(make_pascal(tmp_path / "raw"), size=10, categories="bird,cat")
    tr, va = out["train"], out["val"]
    assert tr.part_names == ["head", "torso", "legs", "front_legs", "back_legs", "tail"]
    assert tr.labels.tolist() == [0, 0] and va.labels.tolist() == [1, 1]   # person, car ignored
    assert extras["train"]["objects"] == [["2008_000001", 0], ["2008_000003", 0]]
    assert tr.part_masks.shape == (2, 6, 10, 10) and tr.part_masks.dtype == torch.bool
    # bird box rows 10..30, cols 20..50; head rows 10..15, cols 20..30 (leye merged into it):
    # nearest sampling picks source rows 11, 13 and cols 21, 24, 27 -> a 2 x 3 block
    expect = torch.zeros(10, 10, dtype=torch.bool)
    expect[:2, :3] = True
    assert torch.equal(tr.part_masks[0, 0], expect)
    assert tr.part_masks[0, 1, 2:].all() and not tr.part_masks[0, 1, :2].any()   # torso
    assert tr.fg_mask[0].all()
    # head centroid (row 12, col 24.5) in source pixels -> pixel-centre mapping into the crop
    assert torch.allclose(tr.landmarks[0, 0], torch.tensor([0.75, (24.5 - 20 + 0.5) / 3 - 0.5]), atol=1e-5)
    assert torch.isnan(tr.landmarks[0, 2]).all() and not tr.part_masks[0, 2].any()  # no legs
    assert torch.allclose(tr.boxes[0], torch.tensor([0.0, 0.0, 10.0, 10.0]))
    assert not va.part_masks[1].any() and torch.isnan(va.landmarks[1]).all()       # no parts
    assert tr.spec["split_source"] == "VOC2010 ImageSets/Main"
    small, _ = pascal_part.convert(tmp_path / "raw", size=10, categories="bird,cat", min_size=5)
    assert len(small["train"]) == 1


def test_pascal_part_raw_parts_and_errors(tmp_path):
    raw = make_pascal(tmp_path / "raw")
    out, _ = pascal_part.convert(raw, size=10, categories=["car"], parts="raw", crop="image")
    car = out["train"]
    assert car.part_names == ["wheel"] and len(car) == 1 and len(out["val"]) == 0
    # the two numbered wheels merge into one mask: both bottom corners of the whole image
    assert car.part_masks[0, 0, -1, 0] and car.part_masks[0, 0, -1, 5] and car.part_masks.sum() > 0
    assert car.boxes[0].tolist() == [5.0, 0.0, 10.0, pytest.approx(40 / 6)]
    with pytest.raises(ValueError, match="parts=merged"):
        pascal_part.convert(raw, size=10, categories=["car"])
    with pytest.raises(ValueError, match="unsupported"):
        pascal_part.convert(raw, size=10, categories=["unicorn"])


# =========================================================================== CelebA

def make_celeba(raw: Path) -> Path:
    names = ["5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive", "Young"]
    rows = {"000001.jpg": [-1, 1, 1, 1], "000002.jpg": [1, -1, -1, 1], "000003.jpg": [-1, -1, 1, -1],
            "000004.jpg": [1, 1, -1, -1], "000005.jpg": [-1, 1, 1, 1], "000006.jpg": [1, 1, -1, 1]}
    for f in rows:
        _img(raw / "img_align_celeba" / f, 18, 22)
    _write(raw / "Anno" / "list_attr_celeba.txt",
           f"{len(rows)}\n" + " ".join(names) + " \n"
           + "".join(f"{f} " + " ".join(f"{v:2d}" for v in r) + "\n" for f, r in rows.items()))
    _write(raw / "Eval" / "list_eval_partition.txt",
           "000001.jpg 0\n000002.jpg 0\n000003.jpg 0\n000004.jpg 1\n000005.jpg 2\n000006.jpg 2\n")
    lm_names = "lefteye_x lefteye_y righteye_x righteye_y nose_x nose_y leftmouth_x leftmouth_y rightmouth_x rightmouth_y"
    _write(raw / "Anno" / "list_landmarks_align_celeba.txt",
           f"{len(rows)}\n{lm_names}\n" + "".join(f"{f} 8.5 10.5 3 4 5 6 7 8 9 21\n" for f in rows))
    return raw


def test_celeba_faceset_target_attributes_landmarks(tmp_path):
    out, extras = celeba.convert(make_celeba(tmp_path / "raw"), size=10)
    tr = out["train"]
    assert isinstance(tr, FaceSet) and [len(out[s]) for s in ("train", "val", "test")] == [3, 1, 2]
    assert tr.attribute_names == ["5_o_Clock_Shadow", "Arched_Eyebrows", "Young"]
    assert tr.target.tolist() == [1.0, 0.0, 1.0] and tr.labels.tolist() == [1, 0, 1]
    assert tr.attributes.tolist() == [[0, 1, 1], [1, 0, 1], [0, 0, 0]]
    ex = extras["train"]
    assert ex["landmark_names"] == ["lefteye", "righteye", "nose", "leftmouth", "rightmouth"]
    # centre crop of the 18 x 22 face keeps rows 2..20; (x=8.5, y=10.5) -> output centre
    assert torch.allclose(ex["landmarks"][0, 0], torch.tensor([4.5, 4.5]))
    assert torch.isnan(ex["landmarks"][0, 4]).all()            # y=21 lies outside the crop
    assert ex["files"] == ["000001.jpg", "000002.jpg", "000003.jpg"]
    other, _ = celeba.convert(tmp_path / "raw", size=10, target="Young", crop="none")
    assert other["train"].target.tolist() == [1.0, 1.0, 0.0]
    with pytest.raises(ValueError, match="unknown target"):
        celeba.convert(tmp_path / "raw", size=10, target="Handsome")


# =========================================================================== ModelNet40

def make_modelnet(raw: Path, n=200) -> Path:
    b = raw / "modelnet40_normal_resampled"
    _write(b / "modelnet40_shape_names.txt", "airplane\nnight_stand\n")
    _write(b / "modelnet40_train.txt", "airplane_0001\nnight_stand_0001\nairplane_0002\n")
    _write(b / "modelnet40_test.txt", "night_stand_0002\n")
    rng = np.random.default_rng(0)
    for sid in ("airplane_0001", "airplane_0002", "night_stand_0001", "night_stand_0002"):
        pts = rng.normal(size=(n, 3)) * [3, 1, 2] + 5
        nrm = rng.normal(size=(n, 3))
        nrm /= np.linalg.norm(nrm, axis=1, keepdims=True)
        _write(b / sid.rsplit("_", 1)[0] / f"{sid}.txt",
               "\n".join(",".join(f"{v:.6f}" for v in row) for row in np.hstack([pts, nrm])) + "\n")
    return raw


def test_modelnet40_resampled_fps_unit_sphere(tmp_path):
    raw = make_modelnet(tmp_path / "raw")
    out, extras = modelnet40.convert(raw, points=64)
    tr = out["train"]
    assert isinstance(tr, PointCloudSet) and tr.points.shape == (3, 64, 3)
    assert tr.labels.tolist() == [0, 1, 0] and out["test"].labels.tolist() == [1]
    assert tr.class_names == ["airplane", "night_stand"]
    norms = tr.points.norm(dim=-1)
    assert torch.allclose(norms.max(1).values, torch.ones(3), atol=1e-5)
    assert tr.points.mean(1).abs().max() < 1e-5
    assert extras["train"]["normals"].shape == (3, 64, 3)
    assert extras["train"]["files"] == ["airplane_0001", "night_stand_0001", "airplane_0002"]
    src = np.loadtxt(raw / "modelnet40_normal_resampled/airplane/airplane_0001.txt", delimiter=",")
    # default = paper 06's choice: the first 64 rows, normalised
    assert np.allclose(tr.points[0].numpy(), modelnet40.normalise(src[:64, :3]), atol=1e-5)
    assert np.allclose(extras["train"]["normals"][0].numpy(), src[:64, 3:], atol=1e-5)
    fps, _ = modelnet40.convert(raw, points=64, sampling="fps")
    idx = modelnet40.farthest_point_sampling(torch.tensor(src[None, :, :3], dtype=torch.float32), 64)[0]
    assert idx[0] == 0
    assert np.allclose(fps["train"].points[0].numpy(), modelnet40.normalise(src[idx.numpy(), :3]), atol=1e-5)
    spread = lambda p: torch.pdist(p).min()                                     # noqa: E731
    assert spread(fps["train"].points[0]) > spread(tr.points[0])               # FPS spreads out
    r1, _ = modelnet40.convert(raw, points=64, sampling="random", seed=1)
    r1b, _ = modelnet40.convert(raw, points=64, sampling="random", seed=1)
    r2, _ = modelnet40.convert(raw, points=64, sampling="random", seed=2)
    assert torch.equal(r1["train"].points, r1b["train"].points)
    assert not torch.equal(r1["train"].points, r2["train"].points)
    with pytest.raises(ValueError, match="fewer than points"):
        modelnet40.convert(raw, points=500)


def test_farthest_point_sampling_known_answer():
    line = torch.arange(10, dtype=torch.float32)[:, None] * torch.tensor([[1.0, 0, 0]])
    idx = modelnet40.farthest_point_sampling(line[None].repeat(2, 1, 1), 3)
    assert idx.tolist() == [[0, 9, 4], [0, 9, 4]]
    clouds = torch.randn(3, 50, 3, generator=torch.Generator().manual_seed(0))
    assert torch.equal(modelnet40.farthest_point_sampling(clouds, 10, chunk=1),
                       modelnet40.farthest_point_sampling(clouds, 10, chunk=2))


def test_modelnet40_off_meshes(tmp_path):
    v = "\n".join(f"{x} {y} {z}" for x in (-1, 1) for y in (-1, 1) for z in (-1, 1))
    quads = "4 0 1 3 2\n4 4 6 7 5\n4 0 4 5 1\n4 2 3 7 6\n4 0 2 6 4\n4 1 5 7 3\n"
    tris = "".join(f"3 {a} {b} {c}\n3 {a} {c} {d}\n" for a, b, c, d in
                   [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)])
    b = tmp_path / "raw" / "ModelNet40" / "cube"
    _write(b / "train" / "cube_0001.off", f"OFF8 12 0\n{v}\n{tris}")       # first-line quirk
    _write(b / "train" / "cube_0002.off", f"OFF\n8 6 0\n{v}\n{quads}")     # polygons
    _write(b / "test" / "cube_0003.off", f"OFF\n8 12 0\n{v}\n{tris}")
    vv, tri = modelnet40.read_off(b / "train" / "cube_0002.off")
    assert tri.shape == (12, 3)
    s = modelnet40.sample_surface(vv, tri, 500, np.random.default_rng(0))
    assert np.allclose(np.abs(s[:, :3]).max(1), 1.0)                  # on the cube's surface
    assert np.allclose(np.linalg.norm(s[:, 3:], axis=1), 1.0)
    out, _ = modelnet40.convert(tmp_path / "raw", layout="off", points=32)
    assert out["train"].points.shape == (2, 32, 3) and out["train"].class_names == ["cube"]
    assert len(out["test"]) == 1


# =========================================================================== SST-2

def make_sst2(raw: Path) -> Path:
    b = raw / "SST-2"
    _write(b / "train.tsv", "sentence\tlabel\na good film \t1\na bad film\t0\ngood good fun \t1\n")
    _write(b / "dev.tsv", "sentence\tlabel\nan awful good film\t0\n")
    _write(b / "test.tsv", "index\tsentence\n0\tunlabelled\n")
    return raw


def test_sst2_vocab_ids_mask(tmp_path):
    out, _ = sst2.convert(make_sst2(tmp_path / "raw"))
    tr, dev = out["train"], out["dev"]
    assert isinstance(tr, TextSet)
    assert tr.vocab == ["<pad>", "<unk>", "good", "a", "film", "bad", "fun"]
    assert tr.tokens[0] == ["a", "good", "film"] and tr.labels.tolist() == [1, 0, 1]
    assert tr.ids.shape == (3, 4) and tr.ids[0].tolist() == [3, 2, 4, 0]
    assert tr.mask[0].tolist() == [True, True, True, False]
    assert dev.ids[0].tolist() == [1, 1, 2, 4]                  # unknown words -> <unk>
    assert tr.class_names == ["negative", "positive"]
    cut, _ = sst2.convert(tmp_path / "raw", min_count=2, max_len=2)
    assert cut["train"].vocab == ["<pad>", "<unk>", "good", "a", "film"]
    assert cut["train"].ids.shape == (3, 2) and cut["train"].tokens[0] == ["a", "good"]
    _write(tmp_path / "raw" / "SST-2" / "dev.tsv", "text\tlabel\nx\t0\n")
    with pytest.raises(ValueError, match="header"):
        sst2.convert(tmp_path / "raw")


# =========================================================================== save / load_real

def _same(a, b):
    if torch.is_tensor(a):
        return torch.equal(torch.nan_to_num(a, nan=-7.0), torch.nan_to_num(b, nan=-7.0))
    return a == b


def test_load_real_round_trip_every_kind(tmp_path):
    root = tmp_path / "data"
    makers = {"cub200": (make_cub, {"size": 10}), "pascal_part": (make_pascal, {"size": 10}),
              "celeba": (make_celeba, {"size": 10}), "modelnet40": (make_modelnet, {"points": 32}),
              "sst2": (make_sst2, {})}
    for name, (make, opts) in makers.items():
        make(common.raw_dir(name, root))
        data_scripts.convert_dataset(name, root, **opts)
        mod, fixed = data_scripts.CONVERTERS[name]
        ref, ref_extras = mod.convert(common.raw_dir(name, root), **fixed, **opts)
        for split, ds in ref.items():
            got, extras = real.load_real(name, root=root, split=split, return_extras=True, **opts)
            assert type(got) is type(ds)
            for f in ds.__dataclass_fields__:
                if f != "spec":
                    assert _same(getattr(got, f), getattr(ds, f)), (name, split, f)
            assert got.spec == json.loads(json.dumps(ds.spec))
            assert set(extras) == set(ref_extras[split])
    # images come back as float32 in [0, 1]; a second conversion with other options coexists
    p12 = data_scripts.convert_dataset("cub200", root, size=12)
    first = p12.with_suffix(".pt").read_bytes()
    assert data_scripts.convert_dataset("cub200", root, size=12) == p12
    assert p12.with_suffix(".pt").read_bytes() == first                # bit-for-bit rerun
    assert real.load_real("cub200", root=root, size=12).images.shape[-1] == 12
    assert real.load_real("cub200", root=root, size="10", split="test").images.dtype == torch.float32
    assert real.load_real("pascal_part", root=root, size=10, categories="bird,cat,cow,dog,horse,sheep")


def test_load_real_errors_name_the_command(tmp_path, monkeypatch):
    monkeypatch.delenv("XNN_DATA", raising=False)
    root = tmp_path / "data"
    with pytest.raises(FileNotFoundError) as e:
        real.load_real("cub200", root=root)
    assert ("python -m data_scripts fetch cub200 --root" in str(e.value)
            and "python -m data_scripts convert cub200 --root" in str(e.value))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    with pytest.raises(FileNotFoundError, match=r"python -m data_scripts fetch cub200 && "
                                                r"python -m data_scripts convert cub200 --size 128"):
        real.load_real("cub200", size=128)
    make_sst2(common.raw_dir("sst2", root))
    data_scripts.convert_dataset("sst2", root, min_count=2)
    with pytest.raises(FileNotFoundError, match="Available conversions: .*min_count=2"):
        real.load_real("sst2", root=root)
    assert len(real.load_real("sst2", root=root, min_count=2, split="dev")) == 1
    with pytest.raises(ValueError, match="no split 'test'"):
        real.load_real("sst2", root=root, min_count=2, split="test")
    with pytest.raises(ValueError, match="unknown convert option"):
        real.load_real("sst2", root=root, min_cnt=2)
    with pytest.raises(ValueError, match="unknown real dataset"):
        real.load_real("imagenet", root=root)


def test_real_module_never_downloads_or_imports_data_scripts():
    src = Path(real.__file__).read_text()
    imported = {a.name.split(".")[0] for n in ast.walk(ast.parse(src))
                if isinstance(n, (ast.Import, ast.ImportFrom))
                for a in (n.names if isinstance(n, ast.Import) else [ast.alias(n.module or "")])}
    assert not imported & {"data_scripts", "urllib", "requests", "http", "socket"}
    assert set(real.KNOWN_DATASETS) == set(registry.REGISTRY) == set(data_scripts.CONVERTERS)


# =========================================================================== fetch / verify

def _sst2_archive(tmp_path) -> Path:
    src = make_sst2(tmp_path / "src")
    arc = tmp_path / "SST-2.tar.gz"
    with tarfile.open(arc, "w:gz") as tf:
        tf.add(src / "SST-2", arcname="SST-2")
    return arc


def _entry(arc: Path, urls, sha256=None, md5=None):
    res = registry.Resource(filename=arc.name, urls=tuple(urls), sha256=sha256, md5=md5)
    return registry.Dataset(name="sst2", title="t", resources=(res,), homepage="h",
                            license="l", citation="c")


def test_fetch_file_url_verify_extract_convert(tmp_path, capsys):
    arc = _sst2_archive(tmp_path)
    sha = hashlib.sha256(arc.read_bytes()).hexdigest()
    root = tmp_path / "data"
    ds = _entry(arc, [(tmp_path / "nope.tar.gz").as_uri(), arc.as_uri()], sha256=sha)
    raw = fetch.fetch("sst2", root, dataset=ds)                       # first mirror fails
    assert (raw / "SST-2" / "train.tsv").is_file()
    assert not list((root / "sst2" / "downloads").glob("*.part"))
    assert json.loads((raw / common.MANIFEST).read_text())[arc.name]["sha256"] == sha
    data_scripts.convert_dataset("sst2", root)
    assert real.load_real("sst2", root=root).spec["files"][arc.name]["sha256"] == sha
    assert fetch.verify("sst2", root, dataset=ds) is True
    assert "OK" in capsys.readouterr().out
    unpinned = _entry(arc, [arc.as_uri()])
    assert fetch.verify("sst2", root, dataset=unpinned) is True
    out = capsys.readouterr().out
    assert "UNPINNED" in out and sha in out             # the computed hash, ready to pin


def test_fetch_copies_plain_files_and_skips_verified_ones(tmp_path):
    src = make_celeba(tmp_path / "src") / "Eval" / "list_eval_partition.txt"
    md5 = hashlib.md5(src.read_bytes()).hexdigest()
    res = registry.Resource(filename=src.name, urls=(src.as_uri(),), md5=md5, extract=False)
    ds = registry.Dataset(name="celeba", title="t", resources=(res,), homepage="h", license="l",
                          citation="c")
    raw = fetch.fetch("celeba", tmp_path / "data", dataset=ds)
    assert (raw / src.name).read_bytes() == src.read_bytes()
    src.unlink()                         # a second fetch reuses the verified local copy
    assert fetch.fetch("celeba", tmp_path / "data", dataset=ds) == raw


def test_checksum_mismatch_leaves_nothing(tmp_path, capsys):
    arc = _sst2_archive(tmp_path)
    root = tmp_path / "data"
    bad = _entry(arc, [arc.as_uri()], sha256="0" * 64)
    with pytest.raises(fetch.DownloadError, match="sha256 mismatch"):
        fetch.fetch("sst2", root, dataset=bad)
    dl = root / "sst2" / "downloads"
    assert not (dl / arc.name).exists() and not list(dl.glob("*.part"))
    assert not (root / "sst2" / "raw").exists()
    # a corrupted local copy (e.g. placed by hand) is caught by fetch and by verify
    (dl / arc.name).write_bytes(b"corrupt")
    with pytest.raises(fetch.ChecksumError):
        fetch.fetch("sst2", root, dataset=bad)
    assert fetch.verify("sst2", root, dataset=_entry(arc, [], md5="1" * 32)) is False
    assert "md5 mismatch" in capsys.readouterr().out


def test_offline_download_error_is_clear(tmp_path, monkeypatch):
    def offline(*a, **k):
        raise urllib.error.URLError("Temporary failure in name resolution")
    monkeypatch.setattr(fetch.urllib.request, "urlopen", offline)
    with pytest.raises(fetch.DownloadError, match="offline") as e:
        fetch.fetch("celeba", tmp_path / "data")
    assert "by hand" in str(e.value) and str(tmp_path / "data" / "celeba" / "downloads") in str(e.value)


# =========================================================================== safe extraction

_tar = make_tar


@pytest.mark.parametrize("members", [
    [("good.txt", "file", None), ("../evil.txt", "file", None)],
    [("good.txt", "file", None), ("/tmp/xnn_evil_abs.txt", "file", None)],
    [("a/link", "sym", "/etc")],
    [("a/link", "sym", "../../outside")],
    [("good.txt", "file", None), ("hard", "hard", "../outside")],
])
def test_safe_extract_refuses_tar_escapes(tmp_path, members):
    arc = _tar(tmp_path / "evil.tar.gz", members)
    target = tmp_path / "out" / "target"
    with pytest.raises(fetch.UnsafeArchiveError):
        fetch.safe_extract(arc, target)
    assert not list(target.iterdir())                         # nothing written, not even good.txt
    assert not (tmp_path / "out" / "evil.txt").exists() and not Path("/tmp/xnn_evil_abs.txt").exists()


@pytest.mark.parametrize("name", ["../evil.txt", "/abs/evil.txt", "a/../../evil.txt"])
def test_safe_extract_refuses_zip_escapes(tmp_path, name):
    arc = tmp_path / "evil.zip"
    with zipfile.ZipFile(arc, "w") as zf:
        zf.writestr("good.txt", "ok")
        zf.writestr(zipfile.ZipInfo(name), "evil")
    with pytest.raises(fetch.UnsafeArchiveError):
        fetch.safe_extract(arc, tmp_path / "t")
    assert not list((tmp_path / "t").iterdir())


def test_safe_extract_keeps_inside_links_and_include_filter(tmp_path):
    arc = _tar(tmp_path / "ok.tar", [("d/x/f.txt", "file", None), ("d/x/link", "sym", "../y"),
                                     ("d/y/g.txt", "file", None)])
    assert fetch.safe_extract(arc, tmp_path / "t1") == 3
    assert (tmp_path / "t1" / "d" / "x" / "link").is_symlink()
    assert fetch.safe_extract(arc, tmp_path / "t2", include=("d/y/",)) == 1
    assert (tmp_path / "t2" / "d" / "y" / "g.txt").is_file() and not (tmp_path / "t2" / "d" / "x").exists()
    with pytest.raises(ValueError, match="unsupported archive"):
        fetch.safe_extract(tmp_path / "x.rar", tmp_path / "t3")


# =========================================================================== CLI, registry, options

def test_cli_convert_verify_list(tmp_path, capsys):
    root = tmp_path / "data"
    make_sst2(common.raw_dir("sst2", root))
    assert cli.main(["convert", "sst2", "--root", str(root), "--min-count", "2"]) == 0
    assert real.load_real("sst2", root=root, min_count=2).vocab[:3] == ["<pad>", "<unk>", "good"]
    assert cli.main(["verify", "sst2", "--root", str(root)]) == 1            # no download
    assert "MISSING" in capsys.readouterr().out
    assert cli.main(["convert", "cub200", "--root", str(root)]) == 1          # not fetched
    assert "python -m data_scripts fetch cub200" in capsys.readouterr().err
    assert cli.main(["convert", "sst2", "--root", str(root), "--limit", "-1"]) == 1
    assert cli.main(["list", "--root", str(root)]) == 0
    assert "min_count=2" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        cli.main(["convert", "sst2", "--root", str(root), "--bogus", "1"])


def test_registry_entries_are_well_formed():
    for name, ds in registry.REGISTRY.items():
        assert ds.resources and ds.license and ds.citation and ds.homepage
        for r in ds.resources:
            assert r.urls and all(u.startswith(("http://", "https://")) for u in r.urls)
            assert r.sha256 is None or (len(r.sha256) == 64 and int(r.sha256, 16) >= 0)
            assert r.md5 is None or (len(r.md5) == 32 and int(r.md5, 16) >= 0)
    with pytest.raises(ValueError, match="known"):
        registry.get("imagenet")


def test_options_and_pick():
    specs = cub200.OPTIONS
    assert common.resolve_options(specs, {"size": "32"})["size"] == 32
    for bad in ({"size": 3}, {"limit": -1}, {"crop": "square"}, {"size": 1.5}, {"margin": "nan"}):
        with pytest.raises(ValueError):
            common.resolve_options(specs, bad)
    a = common.pick(100, 10, 0, "train")
    assert len(a) == 10 and np.all(np.diff(a) > 0)
    assert np.array_equal(a, common.pick(100, 10, 0, "train"))
    assert not np.array_equal(a, common.pick(100, 10, 0, "test"))
    assert np.array_equal(common.pick(5, 0, 0, "x"), np.arange(5))

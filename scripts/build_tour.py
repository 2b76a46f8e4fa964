import sys
sys.path.insert(0, "/work/main/scripts")
from nbtools import build

cells = [
("md", r'''
# 00 · A tour of xnn

**xnn** reproduces Quanshi Zhang's programme for understanding deep networks, one notebook per paper
(explanatory graphs, interpretable CNNs, semantic quantification, information discarding, knowledge
consistency, point-cloud architecture utilities). This tour shows what every notebook stands on, before any
method: the parameters cell and profiles, feature capture by layer name, the metrics ledger, the embedded
data sets with their planted ground truth, and the model zoo trained through the one cached trainer.

**What you will see:** the list of notebooks; features captured from a small VGG-like net; samples of every
embedded data set with landmarks, part masks, attributes, point clouds and planted key words drawn over them;
the validation accuracy of each zoo model on its data set.

**Run time** (2-core CPU): smoke ~40 s · default ~4 min on the first run, ~20 s once the models are cached ·
paper: as default (this notebook has no paper-scale setting).
'''),
("params", r'''
profile: str = "default"  # smoke | default | paper: data sizes and training length
seed: int = 0  # seed for data generation, model initialisation and training
'''),
("md", r'''
## Profiles and the parameters cell

Every notebook has exactly one cell tagged `parameters` (above), typed and commented, so that
`xnn list` can show it and `xnn run NN -p name value` can set it headless (unknown names are refused).
`profile` picks sizes in one place: `smoke` proves that every cell runs (seconds), `default` shows each
effect with several seeds (minutes on a laptop CPU), `paper` uses the papers' settings (meant for a GPU).
'''),
("code", r'''
import torch
import pandas as pd

from xnn_support import capture, record, results_table, seed_everything, viz, widgets, data, models
from xnn_support.capture import CaptureError, layer_names
from xnn_support.runner import catalog
from xnn_support.train import fit

SIZES = {  # profile -> sizes, in one place
    "smoke":   dict(n_images=300, image_epochs=1, n_digits=300, cloud_epochs=1, n_sentences=400, text_epochs=1),
    "default": dict(n_images=2000, image_epochs=8, n_digits=1797, cloud_epochs=15, n_sentences=2000, text_epochs=5),
    "paper":   dict(n_images=2000, image_epochs=8, n_digits=1797, cloud_epochs=15, n_sentences=2000, text_epochs=5),
}[profile]
seed_everything(seed)
SIZES
'''),
("md", r'''
## The suite

Each row is a notebook: its paper, its parameters (read from its `parameters` cell by papermill) and its run
time per profile. `xnn list` prints the same from a terminal.
'''),
("code", r'''
pd.DataFrame([{"notebook": i.name, "title": i.title, "paper": i.paper,
               "parameters": ", ".join(f"{k}: {v['inferred_type_name']}" for k, v in i.parameters.items()),
               **{f"time ({p})": i.runtime.get(p, "") for p in ("smoke", "default", "paper")}}
              for i in catalog()]).set_index("notebook")
'''),
("md", r'''
Headless, from a terminal (inside `.venv`):

```bash
xnn run 00 --profile smoke --out runs/try          # one notebook
xnn run 04 -p steps 300 --profile smoke            # set a parameter; a misspelt name is an error listing the valid ones
xnn reproduce --profile default --resume           # all notebooks, then runs/default/report.md and report.html
```

## Feature capture by layer name

Methods read intermediate features through one context manager, `capture(model, layers)`. Layers are dotted
names (`"features.7"`, `"layer4.1.conv2"`) or module objects; the hooks are removed when the block ends, also
when an exception is raised; an in-place ReLU after a captured layer cannot alter what was captured.
'''),
("code", r'''
net = models.build("vgg_small", num_classes=5, in_size=64, seed=seed).eval()
images = data.creatures(8, 64, seed=seed).images
names = [n for n in layer_names(net) if n.startswith("features.") and n.count(".") == 1]
print(f"{len(names)} feature layers, e.g. {names[:6]}")
layers = names[1], names[len(names) // 2], names[-1]
with torch.no_grad(), capture(net, layers) as cap:
    logits = net(images)
for name in layers:
    print(f"{name:12s} -> {tuple(cap[name].shape)}")
hooks_left = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in net.modules())
record("tour/hooks_left_after_capture", hooks_left, note="must be 0: hooks are always removed")
'''),
("code", r'''
try:  # a misspelt layer name is an error that lists the closest valid names
    with capture(net, ["feature.3"]):
        pass
except CaptureError as e:
    print(e)
with torch.no_grad(), capture(net, [layers[0]], stop=True) as cap:  # truncated forward: later layers never run
    cap.forward(images)
viz.feature_maps(cap[layers[0]][0], n=16, title=f"{layers[0]} of an untrained vgg_small, image 0")
'''),
("md", r'''
## Embedded data with planted ground truth

The papers used CUB-200, Pascal-Part, CelebA, ModelNet40 and SST-2. The default here is data generated on the
fly, with ground truth those data sets never had, so each notebook can check that a method recovers the truth.
Real data sets come in through `data_scripts/` in the same in-memory format.

**`creatures`**: birds, quadrupeds, two-wheeled carts (two identical parts with separate landmarks) and a
texture-only class, under random pose, articulation and flips, on cluttered backgrounds; negatives are
scattered, unassembled parts. Dots are landmarks, outlines are part masks, the dashed box is the object box.
'''),
("code", r'''
creatures = data.creatures(SIZES["n_images"], 64, seed=seed)
record("data/creatures_images", len(creatures), note="64 px, seed " + str(seed))
viz.image_grid(creatures, n=12, masks=True, title="creatures (64 px): landmarks, part masks, boxes")
'''),
("md", r'''
**`concept_faces`**: cartoon faces with binary attributes, each drawn in a known region; a planted target
(a known weighted sum of attributes plus noise), and optionally the lecture's planted bias (lipstick
co-occurring with rosy cheeks).
'''),
("code", r'''
faces = data.concept_faces(400, 64, seed=seed)
planted = pd.Series(faces.weights.numpy(), index=faces.attribute_names, name="planted weight")
display(planted.to_frame().T)
viz.face_grid(faces, n=8, title="concept_faces: present attributes and planted target")
'''),
("md", r'''
**Point clouds**: `digits3d` (scikit-learn's real 8x8 handwritten digits lifted to 3D), `shapes3d`
(procedural primitives and composite objects, like ModelNet) and `parts3d` (composites with part labels, like
ShapeNet parts; colours are parts).
'''),
("code", r'''
digits = data.digits3d(SIZES["n_digits"], 512, seed=seed)
shapes = data.shapes3d(2, 512, seed=seed)
parts = data.parts3d(1, 512, seed=seed)
display(viz.cloud_grid(digits, n=4, title="digits3d"))
display(viz.cloud_grid(shapes, idx=[int((shapes.labels == c).nonzero()[0, 0]) for c in range(0, len(shapes.class_names), 4)], cols=5, title="shapes3d (one per class, every 4th class)"))
viz.cloud_grid(parts, n=4, title="parts3d (colour = part)")
'''),
("md", r'''
**`sentiment_corpus`**: sentences of neutral filler words with planted positive (green) and negative (red) key
words; the label is whether positive keys outnumber negative ones, so a model that reads the key words and
ignores the fillers is exactly right.
'''),
("code", r'''
corpus = data.sentiment_corpus(SIZES["n_sentences"], seed=seed)
viz.sentence_table(corpus, n=6, title="sentiment_corpus: planted key words")
'''),
("md", r'''
## The model zoo, trained once and cached

All networks are trained by one trainer, `fit`, with a progress bar and validation accuracy per epoch. Its
checkpoint cache is keyed by model, data, hyper-parameters, seed and package version: the first run trains,
every later run loads the weights in about a second.
'''),
("code", r'''
tr, va = creatures.split(0.2, seed=seed)
cnn = fit("vgg_small", tr, va, epochs=SIZES["image_epochs"], augment="flip", seed=seed)
dtr, dva = digits.split(0.2, seed=seed)
pnet = fit("pointnet", dtr, dva, epochs=SIZES["cloud_epochs"], seed=seed)
ctr, cva = corpus.split(0.2, seed=seed)
tcnn = fit("text_cnn", ctr, cva, epochs=SIZES["text_epochs"], seed=seed)
zoo = {"vgg_small on creatures": cnn, "pointnet on digits3d": pnet, "text_cnn on sentiment_corpus": tcnn}
record("model/vgg_small_creatures_val_acc", cnn.val_acc, note=f"{SIZES['image_epochs']} epochs, seed {seed}")
record("model/pointnet_digits3d_val_acc", pnet.val_acc, note=f"{SIZES['cloud_epochs']} epochs, seed {seed}")
record("model/text_cnn_sentiment_val_acc", tcnn.val_acc, note=f"{SIZES['text_epochs']} epochs, seed {seed}")
pd.DataFrame({k: {"val acc": r.val_acc, "epochs": len(r.history), "from cache": r.from_cache} for k, r in zoo.items()}).T
'''),
("code", r'''
viz.training_curves({k: r.history for k, r in zoo.items()}, keys=("loss", "val_acc"), title="training curves")
'''),
("md", r'''
## Results

Every number above went through `record(name, value, paper=...)`, which appends to this notebook's ledger
(`OUT/00_tour.metrics.json` in a headless run) and shows it. `xnn reproduce` collects the ledgers into the report.
'''),
("code", r'''
results_table()
'''),
("md", r'''
**Reading.** A random-weight network's features are textures; the trained zoo reaches high validation accuracy
on each embedded set (chance is 1/5 for `creatures`, 1/10 for `digits3d`, 1/2 for the corpus), which is what
the method notebooks need: networks that really learned their task. In the `smoke` profile the models train for
one epoch on little data, so their accuracies are low by design.

**Interactive (skipped headless):** page through a data set.
'''),
("widget", r'''
widgets.dataset_browser(creatures, kind="images")
'''),
]
meta = {"title": "A tour of xnn", "paper": "— (the suite itself)", "arxiv": "",
        "runtime": {"smoke": "~40 s", "default": "~4 min (first run), ~20 s cached", "paper": "as default"},
        "metrics": ["tour/hooks_left_after_capture", "data/creatures_images", "model/vgg_small_creatures_val_acc",
                    "model/pointnet_digits3d_val_acc", "model/text_cnn_sentiment_val_acc"],
        "key_metrics": ["model/vgg_small_creatures_val_acc", "model/pointnet_digits3d_val_acc",
                        "model/text_cnn_sentiment_val_acc"]}
build("/work/main/notebooks/00_tour.ipynb", cells, meta)

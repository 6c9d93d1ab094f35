"""Real datasets for the accuracy benchmark (issue 19), built from public GitHub repositories
that commit individual image files, at a pinned commit.

    python bench/accuracy/datasets.py build [--root /work/cache/datasets] [--only NAME ...] [--force]
    python bench/accuracy/datasets.py sources [--root ...]      # rewrite SOURCES.md from SOURCE.json

For each dataset of REGISTRY the builder

1. finds the repository: a local bare mirror (``$TFTL_MIRRORS``, default /work/.mirror, as
   ``<owner>+<name>/repo`` or ``.../repo/.git``), read only; where there is none it clones
   the repository (``git clone --bare``) into ``ROOT/.git/<owner>+<name>`` and checks that the
   pinned commit is there. Every file is read from the pinned commit with ``git cat-file``,
   never from a work tree, so later pushes to the repository change nothing;
2. lists the class folders, reads every image blob, skips Git LFS pointers, files Pillow cannot
   decode and images whose shorter side is under MIN_SIDE (each recorded in SOURCE.json);
3. removes exact duplicates by sha256 over the WHOLE dataset before splitting: bytes found in
   two classes are dropped everywhere (ambiguous label), bytes repeated in one class keep one
   copy; so no test image's bytes can appear in any training pool;
4. draws per class, by a fixed seeded permutation of the files sorted by sha256, ``test``
   photos for the fixed test part and up to ``pool`` of the rest for the training pool;
5. writes ``ROOT/NAME/pool/<class>/<file>`` and ``ROOT/NAME/test/<class>/<file>`` (the
   original bytes) and ``ROOT/NAME/train-nK-sS/<class>/<file>`` as relative symlinks into the
   pool for K in REGIMES (where every class's pool has K) and S in SEEDS: seed S shuffles each
   class's pool once and takes its first K, so n10 < n20 < n40 for one seed (nested);
6. writes ``ROOT/NAME/SOURCE.json`` (source, commit, licence, counts, skipped, duplicates,
   every file's sha256), all in a temp folder renamed into place (atomic); a dataset whose
   SOURCE.json already records the same spec is left alone (idempotent) unless --force.

Then it (re)writes bench/accuracy/SOURCES.md from the SOURCE.json files.
"""

import argparse
import dataclasses
import hashlib
import io
import json
import os
import random
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_ROOT = os.environ.get("TFTL_DATASETS", "/work/cache/datasets")
MIRRORS = os.environ.get("TFTL_MIRRORS", "/work/.mirror")
SOURCES_MD = os.path.join(HERE, "SOURCES.md")
BUILDER_VERSION = 4
REGIMES = (10, 20, 40)
SEEDS = (0, 1, 2)
SPLIT_SEED = 19  # the test/pool draw (issue 19); the train-nK-sS draws use S
MIN_SIDE = 100
NEAR_SIDE = 64  # near duplicates: the detail (grayscale minus its Gaussian blur) of 64x64 thumbnails ...
NEAR_BLUR = 2.0
NEAR_CORR = 0.8  # ... correlating at least this much
IMAGE_EXT = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
try:  # the formats tftl's reader accepts (a GIF named .jpg decodes in Pillow but not in tftl)
    from tftl.runtime.data import IMAGE_FORMATS
except ImportError:  # pragma: no cover - the builder also runs without tftl on the path
    IMAGE_FORMATS = ("JPEG", "PNG", "BMP", "WEBP")


@dataclass(frozen=True)
class Dataset:
    """One dataset: `classes` maps each class label (the folder name written) to the folders,
    relative to the repository root at `commit`, whose image files are that class."""
    name: str
    domain: str
    repo: str  # owner/name on GitHub
    commit: str  # 40 hex digits, pinned
    classes: dict
    test: int  # test photos per class (fixed)
    pool: int  # at most this many training-pool photos per class
    licence: str
    source: str  # the public dataset it is a copy of
    notes: str = ""
    url: str = field(default="")
    file_prefix: str = ""  # when set, only files whose name starts with it are read
    exclude: tuple = ()  # repository paths left out whatever the copy holds (recorded as skipped)

    def clone_url(self):
        return self.url or f"https://github.com/{self.repo}.git"

    def spec(self):
        d = dataclasses.asdict(self)
        d.update(builder_version=BUILDER_VERSION, regimes=list(REGIMES), seeds=list(SEEDS), split_seed=SPLIT_SEED,
                 min_side=MIN_SIDE, near=[NEAR_SIDE, NEAR_BLUR, NEAR_CORR])
        return d


DTD_CLASSES = ("banded", "blotchy", "braided", "bubbly", "bumpy", "chequered", "cobwebbed", "cracked",
               "crosshatched", "crystalline")
WOOF = {"shih_tzu": "n02086240", "rhodesian_ridgeback": "n02087394", "beagle": "n02088364",
        "english_foxhound": "n02089973", "border_terrier": "n02093754", "australian_terrier": "n02096294",
        "golden_retriever": "n02099601", "old_english_sheepdog": "n02105641", "samoyed": "n02111889",
        "dingo": "n02115641"}
INTEL = ("buildings", "forest", "glacier", "mountain", "sea", "street")
WEATHER = ("cloudy", "rain", "shine", "sunrise")
TRASH = ("cardboard", "glass", "metal", "paper", "plastic", "trash")

REGISTRY = (
    Dataset(
        name="dtd10", domain="textures", repo="pan8915/DeepTexture",
        commit="522f46f683af11e93673bff29f81df14f49edfb2",
        classes={c: (f"images/{c}",) for c in DTD_CLASSES}, test=40, pool=80,
        licence="DTD terms: images from Flickr, released for research purposes only (Cimpoi et al., CVPR 2014); "
                "the repository has no licence file",
        source="Describable Textures Dataset (DTD), its first 10 of 47 categories, 120 photos each",
        notes="the repository keeps the first 10 DTD categories, every photo re-saved at 300x300"),
    Dataset(
        name="imagewoof10", domain="dog breeds (fine-grained animals)", repo="thunderInfy/imagewoof",
        commit="6338aeea098965e0a0ebdf74404862fae9760fe3",
        classes={label: (f"train/{wnid}", f"val/{wnid}") for label, wnid in WOOF.items()}, test=10, pool=40,
        file_prefix="ILSVRC2012_val_",
        licence="ImageNet terms (non-commercial research and education); Imagewoof (fast.ai) is distributed "
                "under Apache-2.0 for its packaging; the repository has no licence file",
        source="Imagewoof2 (fast.ai): 10 dog breeds of ImageNet, 224x224 in this repository",
        notes="only the 50 photos per class that come from ImageNet's VALIDATION set (ILSVRC2012_val_*, spread "
              "over the repository's train/ and val/) are used: the rest of Imagewoof2, its val/ included, is "
              "ImageNet training photos, which the ImageNet-pretrained trunk was trained on. The trunk did see "
              "these 10 classes. So the test part is only 10 photos per class (100 in all): +-4.5 points of "
              "binomial error"),
    Dataset(
        name="intel6", domain="natural scenes", repo="afroozsheikh/Intel-Image-Classifier",
        commit="5b571f44a7fdd66301f05b6921c07ee71b9e324c",
        classes={c: (f"train/{c}", f"test/{c}") for c in INTEL}, test=60, pool=100,
        licence="unknown (Intel Image Classification, published on Kaggle by puneet6060 from an Intel / Analytics "
                "Vidhya challenge; no licence stated); the repository has no licence file",
        source="Intel Image Classification (scene classification), 150x150 photos",
        notes="pinned to the commit that added the dataset (150x150 originals); the repository's later commits "
              "replaced the photos with 100x100 resizes. Its train/ and test/ folders are pooled, deduplicated and "
              "re-split here"),
    Dataset(
        name="weather4", domain="weather conditions (outdoor photos)",
        repo="talalahmad27/Image-Classification-Using-Pretrained-models",
        commit="08bb03a6165370207878969e4b64538c141c35e4",
        classes={c: ("dataset2",) for c in WEATHER}, test=60, pool=100,
        exclude=("dataset2/rain137.jpg", "dataset2/sunrise16.jpg", "dataset2/sunrise23.jpg", "dataset2/sunrise7.jpg"),
        licence="CC BY 4.0 (Multi-class Weather Dataset for Image Classification, G. Ajayi, Mendeley Data, "
                "doi:10.17632/4drtyfjtfy.1); the repository has no licence file",
        source="Multi-class Weather Dataset (MWD): cloudy 300, rain 215, shine 253, sunrise 357 photos",
        notes="pinned to the commit that added the photos as plain files (the next commit moved them to Git LFS). "
              "All classes share one folder: the class is the file-name prefix (cloudy12.jpg -> cloudy). Four "
              "photos are excluded: the fetched snapshot lacks their blobs (it leaves out large files), so a build "
              "from a full clone reads the same photos. Only 4 classes"),
    Dataset(
        name="trashnet6", domain="household objects by material (waste sorting)",
        repo="congduytran12/Trash-Classification-", commit="00212f2c18dcdb9045c74481eaae5baaf72537df",
        classes={c: (f"dataset-resized/{c}",) for c in TRASH}, test=50, pool=100,
        licence="MIT (TrashNet, G. Thung and M. Yang, github.com/garythung/trashnet, whose repository is MIT "
                "licensed); this copy's repository has no licence file",
        source="TrashNet dataset-resized: 2527 photos of single objects on a white background, 512x384",
        notes="trash has only 137 photos (pool 87); the others 403-594"),
)
BY_NAME = {d.name: d for d in REGISTRY}


def class_of_file(ds, label, relpath):
    """Whether the image at `relpath` (under one of `label`'s folders) belongs to `label`: a
    folder shared by several classes (weather4) tells them apart by the file-name prefix."""
    shared = sum(1 for folders in ds.classes.values() if set(folders) & set(ds.classes[label])) > 1
    if not shared:
        return True
    stem = os.path.splitext(os.path.basename(relpath))[0].lower().rstrip("0123456789").rstrip("_- ")
    return stem == label


# --- the repository, read only -----------------------------------------------------------------

def mirror_dir(repo, mirrors=MIRRORS):
    """The bare git directory of `repo` under `mirrors` (as fetched: <owner>+<name>/repo or
    <owner>+<name>/repo/.git), or None."""
    base = os.path.join(mirrors, repo.replace("/", "+"), "repo")
    for g in (base, os.path.join(base, ".git")):
        if os.path.isfile(os.path.join(g, "HEAD")) and os.path.isdir(os.path.join(g, "objects")):
            return g
    return None


def git(gitdir, *args, binary=False):
    out = subprocess.run(["git", "--git-dir", gitdir, *args], check=True, capture_output=True)
    return out.stdout if binary else out.stdout.decode()


def has_commit(gitdir, commit):
    return subprocess.run(["git", "--git-dir", gitdir, "cat-file", "-e", commit + "^{commit}"],
                          capture_output=True).returncode == 0


def repository(ds, root, mirrors=MIRRORS):
    """(git dir, how it was found): the local mirror, else a bare clone under ROOT/.git/ (the
    network path). Fails if the pinned commit is not there."""
    g = mirror_dir(ds.repo, mirrors)
    how = "mirror"
    if g is None:
        g = os.path.join(root, ".git", ds.repo.replace("/", "+"))
        how = "clone"
        if not os.path.isdir(g):
            os.makedirs(os.path.dirname(g), exist_ok=True)
            subprocess.run(["git", "clone", "--bare", "--quiet", ds.clone_url(), g + ".tmp"], check=True)
            os.replace(g + ".tmp", g)
        if not has_commit(g, ds.commit):
            subprocess.run(["git", "--git-dir", g, "fetch", "--quiet", "origin", ds.commit], check=True)
    if not has_commit(g, ds.commit):
        raise SystemExit(f"{ds.name}: commit {ds.commit} is not in {g}")
    return g, how


def list_images(gitdir, commit, folder):
    """[(path, blob id, size)] of the image files directly in `folder` at `commit`, sorted."""
    out = git(gitdir, "ls-tree", "-l", "-z", commit, "--", folder.rstrip("/") + "/")
    rows = []
    for entry in out.split("\0"):
        if not entry:
            continue
        meta, path = entry.split("\t", 1)
        mode, kind, blob, size = meta.split()
        if kind == "blob" and path.lower().endswith(IMAGE_EXT):
            rows.append((path, blob, int(size) if size.isdigit() else None))  # None: blob absent here
    return sorted(rows)


class BlobReader:
    """`git cat-file --batch` kept open: read(blob id) -> bytes."""

    def __init__(self, gitdir):
        self.p = subprocess.Popen(["git", "--git-dir", gitdir, "cat-file", "--batch"], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE)

    def read(self, blob):
        self.p.stdin.write(blob.encode() + b"\n")
        self.p.stdin.flush()
        header = self.p.stdout.readline().split()
        if len(header) < 3 or header[1] != b"blob":
            raise KeyError(blob)
        data = self.p.stdout.read(int(header[2]))
        self.p.stdout.read(1)
        return data

    def close(self):
        self.p.stdin.close()
        self.p.wait()


def check_image(data):
    """None if `data` is an image Pillow decodes fully, in a format tftl reads (IMAGE_FORMATS),
    with both sides >= MIN_SIDE; else why not."""
    if data.startswith(b"version https://git-lfs"):
        return "git-lfs pointer"
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            fmt = im.format
            im.load()
            w, h = im.size
    except Exception as e:  # noqa: BLE001 - any undecodable bytes are skipped and recorded
        return f"undecodable: {type(e).__name__}"
    if fmt not in IMAGE_FORMATS:
        return f"format not read by tftl: {fmt}"
    if min(w, h) < MIN_SIDE:
        return f"too small: {w}x{h}"
    return None


def thumbnail(data, side=NEAR_SIDE, blur=NEAR_BLUR):
    """The detail of the image: its side x side grayscale thumbnail minus a Gaussian blur of it
    (radius `blur`), as a zero-mean, unit-norm float32 vector; the dot product of two is their
    correlation. Re-encodes, resizes and small crops of one photo correlate near 1; different
    photos with the same layout (sky above, land below; an object on a white sheet) do not,
    which plain pixel correlation of a thumbnail cannot tell apart. A flat image is all zeros."""
    from PIL import Image, ImageFilter

    with Image.open(io.BytesIO(data)) as im:
        g = im.convert("L").resize((side, side), Image.BILINEAR)
    a = np.asarray(g, dtype=np.float32) - np.asarray(g.filter(ImageFilter.GaussianBlur(blur)), dtype=np.float32)
    a = a.ravel() - a.mean()
    norm = float(np.linalg.norm(a))
    return a / norm if norm > 1e-6 else np.zeros_like(a)


def near_pairs(thumbs, threshold=NEAR_CORR, chunk=1024):
    """[(i, j, correlation)], i < j, of the rows of `thumbs` correlating >= threshold."""
    x = np.asarray(thumbs, dtype=np.float32)
    out = []
    for start in range(0, len(x), chunk):
        sim = x[start:start + chunk] @ x.T
        ii, jj = np.nonzero(sim >= threshold)
        out += [(i + start, j, float(sim[i, j])) for i, j in zip(ii.tolist(), jj.tolist()) if i + start < j]
    return out


def union_groups(n, pairs):
    """Connected components (sorted lists of indices, size >= 2) of the pairs' graph."""
    parent = list(range(n))

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in pairs:
        parent[find(j)] = find(i)
    groups = {}
    for i in range(n):
        groups.setdefault(find(i), []).append(i)
    return sorted(g for g in groups.values() if len(g) > 1)


# --- the split -----------------------------------------------------------------------------------

def dedupe(items):
    """items: [{label, path, sha256, ...}]. Returns (kept, removed): bytes in two or more
    classes are removed everywhere; repeats within one class keep the first path."""
    labels_of = {}
    for it in items:
        labels_of.setdefault(it["sha256"], set()).add(it["label"])
    kept, removed, seen = [], [], set()
    for it in sorted(items, key=lambda i: (i["label"], i["path"])):
        h = it["sha256"]
        if len(labels_of[h]) > 1:
            removed.append(dict(path=it["path"], sha256=h, reason="same bytes in classes " +
                                ", ".join(sorted(labels_of[h]))))
        elif h in seen:
            removed.append(dict(path=it["path"], sha256=h, reason="duplicate within class"))
        else:
            seen.add(h)
            kept.append(it)
    return kept, removed


def split_class(items, label, n_test, n_pool, seed=SPLIT_SEED, groups=()):
    """(test, pool) of one class's items: a seeded permutation of the items sorted by sha256
    (independent of paths and listing order); the first n_test are the test part, the next
    n_pool (at most) the pool. `groups` (lists of sha256) are near duplicates: a group goes
    whole to the test part or whole to the rest (the test part takes the next items that fit)."""
    order = sorted(items, key=lambda i: i["sha256"])
    random.Random(f"{seed}:{label}").shuffle(order)
    by_sha = {i["sha256"]: i for i in order}
    group_of = {h: [by_sha[m] for m in sorted(g) if m in by_sha] for g in groups for h in g}
    test, rest, done = [], [], set()
    for it in order:
        if it["sha256"] in done:
            continue
        unit = group_of.get(it["sha256"], [it])
        done.update(u["sha256"] for u in unit)
        (test if len(test) + len(unit) <= n_test else rest).extend(unit)
    return test, rest[:n_pool]


def draw_train(pool_files, k, seed, label):
    """The first k of pool_files (sorted, then shuffled by `seed` and the class): nested in k."""
    order = sorted(pool_files)
    random.Random(f"train:{seed}:{label}").shuffle(order)
    return sorted(order[:k])


def unique_name(path, taken):
    base = os.path.basename(path)
    name, i = base, 0
    while name in taken:
        i += 1
        name = f"{i}-{base}"
    taken.add(name)
    return name


def write_split(dest, ds_name, per_class, regimes=REGIMES, seeds=SEEDS):
    """Write dest/{test,pool}/<class>/<file> from per_class {label: (test items, pool items)}
    (items carry 'data' bytes and 'sha256'), then the train-nK-sS symlink folders; returns
    (files {split: {label: [{file, sha256, path}]}}, train {regime name: {label: [file]}})."""
    files = {"test": {}, "pool": {}}
    for label, (test, pool) in sorted(per_class.items()):
        taken = set()
        for part, items in (("test", test), ("pool", pool)):
            folder = os.path.join(dest, part, label)
            os.makedirs(folder, exist_ok=True)
            rows = []
            for it in items:
                name = unique_name(it["path"], taken)
                with open(os.path.join(folder, name), "wb") as f:
                    f.write(it["data"])
                rows.append(dict(file=name, sha256=it["sha256"], path=it["path"]))
            files[part][label] = sorted(rows, key=lambda r: r["file"])
    train = {}
    smallest = min((len(v) for v in files["pool"].values()), default=0)
    for k in regimes:
        if k > smallest:
            continue
        for s in seeds:
            name = f"train-n{k}-s{s}"
            train[name] = {}
            for label, rows in files["pool"].items():
                folder = os.path.join(dest, name, label)
                os.makedirs(folder)
                chosen = draw_train([r["file"] for r in rows], k, s, label)
                for f in chosen:
                    os.symlink(os.path.join("..", "..", "pool", label, f), os.path.join(folder, f))
                train[name][label] = chosen
    return files, train


def build(ds, root, force=False, mirrors=MIRRORS, log=print):
    """Build ROOT/<ds.name> (see the module docstring). Returns its SOURCE.json dict."""
    final = os.path.join(root, ds.name)
    source_json = os.path.join(final, "SOURCE.json")
    if not force and os.path.exists(source_json):
        with open(source_json) as f:
            old = json.load(f)
        if old.get("spec") == json.loads(json.dumps(ds.spec())):
            log(f"{ds.name}: up to date ({source_json})")
            return old
    t0 = time.time()
    gitdir, how = repository(ds, root, mirrors)
    reader = BlobReader(gitdir)
    items, skipped = [], []
    try:
        for label, folders in sorted(ds.classes.items()):
            for folder in folders:
                for path, blob, size in list_images(gitdir, ds.commit, folder):
                    if not class_of_file(ds, label, path) or not os.path.basename(path).startswith(ds.file_prefix):
                        continue
                    if path in ds.exclude:
                        skipped.append(dict(path=path, reason="excluded by the registry"))
                        continue
                    if size is None:  # e.g. a snapshot that leaves out files of 4 MiB and more
                        skipped.append(dict(path=path, reason="blob missing from this copy of the repository"))
                        continue
                    data = reader.read(blob)
                    why = check_image(data)
                    if why:
                        skipped.append(dict(path=path, reason=why))
                        continue
                    items.append(dict(label=label, path=path, data=data, sha256=hashlib.sha256(data).hexdigest(),
                                      thumb=thumbnail(data)))
    finally:
        reader.close()
    found = {label: sum(1 for i in items if i["label"] == label) for label in ds.classes}
    kept, removed = dedupe(items)
    # near duplicates (re-encodes, resizes, small crops): a pair across classes is an ambiguous
    # label and both go; pairs within a class join groups that stay on one side of the split
    pairs = near_pairs([i["thumb"] for i in kept])
    gone = set()
    for i, j, c in pairs:
        if kept[i]["label"] != kept[j]["label"]:
            labels = ", ".join(sorted((kept[i]["label"], kept[j]["label"])))
            for m in (kept[i], kept[j]):
                if m["sha256"] not in gone:  # unique among `kept` (exact copies are gone)
                    removed.append(dict(path=m["path"], sha256=m["sha256"], reason="near duplicate across classes "
                                        + labels, correlation=round(c, 4)))
                    gone.add(m["sha256"])
    same = [(i, j) for i, j, _ in pairs if kept[i]["sha256"] not in gone and kept[j]["sha256"] not in gone
            and kept[i]["label"] == kept[j]["label"]]
    near = [[kept[i] for i in g] for g in union_groups(len(kept), same)]
    kept = [i for i in kept if i["sha256"] not in gone]
    near_by_label = {}
    for members in near:
        near_by_label.setdefault(members[0]["label"], []).append([m["sha256"] for m in members])
    per_class, unused = {}, {}
    for label in ds.classes:
        mine = [i for i in kept if i["label"] == label]
        if len(mine) < ds.test + max(REGIMES[0], 1):
            raise SystemExit(f"{ds.name}: class {label} has {len(mine)} usable photos, fewer than test "
                             f"{ds.test} + {REGIMES[0]}")
        per_class[label] = split_class(mine, label, ds.test, ds.pool, groups=near_by_label.get(label, ()))
        unused[label] = len(mine) - len(per_class[label][0]) - len(per_class[label][1])
    os.makedirs(root, exist_ok=True)
    tmp = os.path.join(root, f".{ds.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    files, train = write_split(tmp, ds.name, per_class)
    test_hashes = {r["sha256"] for rows in files["test"].values() for r in rows}
    pool_hashes = {r["sha256"] for rows in files["pool"].values() for r in rows}
    assert not test_hashes & pool_hashes, "a test image's bytes are in the training pool"
    tt = np.stack([i["thumb"] for t, _ in per_class.values() for i in t])
    pt = np.stack([i["thumb"] for _, p in per_class.values() for i in p])
    worst = float((tt @ pt.T).max())
    assert worst < NEAR_CORR, "a test image has a near duplicate in the training pool"
    info = dict(
        name=ds.name, domain=ds.domain, repo=ds.repo, commit=ds.commit, clone_url=ds.clone_url(),
        read_from=how, licence=ds.licence, source=ds.source, notes=ds.notes,
        classes={label: list(folders) for label, folders in sorted(ds.classes.items())},
        split=(f"per class: the usable photos (decoded by Pillow, JPEG/PNG/BMP/WebP, both sides >= {MIN_SIDE} px), "
               f"less exact duplicates (sha256) and near duplicates across classes, sorted by sha256 and shuffled "
               f"with random.Random('{SPLIT_SEED}:<class>'); in that order the first {ds.test} that fit are test/ "
               f"(a group of near duplicates goes whole to one side), the next at most {ds.pool} pool/. "
               f"train-nK-sS/<class>/ holds symlinks to the first K of the class's pool files (sorted, shuffled "
               f"with random.Random('train:S:<class>')): nested in K for one seed"),
        counts={label: dict(found=found[label], after_dedupe=len(per_class[label][0]) + len(per_class[label][1])
                            + unused[label], test=len(files["test"][label]), pool=len(files["pool"][label]),
                            unused=unused[label])
                for label in sorted(ds.classes)},
        regimes={name: sum(len(v) for v in by_class.values()) for name, by_class in sorted(train.items())},
        skipped=skipped, duplicates_removed=removed,
        near_duplicates=dict(rule=f"correlation >= {NEAR_CORR} of the detail of {NEAR_SIDE}x{NEAR_SIDE} grayscale "
                             f"thumbnails (minus a Gaussian blur of radius {NEAR_BLUR}); both photos of a pair "
                             "across classes are removed, pairs within a class join groups kept on one side of the "
                             "split", max_test_pool_correlation=round(worst, 4),
                             groups=[[m["path"] for m in members] for members in near]),
        files=files, train=train,
        spec=ds.spec(), built_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        seconds=round(time.time() - t0, 1))
    with open(os.path.join(tmp, "SOURCE.json"), "w") as f:
        json.dump(info, f, indent=1)
    old = None
    if os.path.exists(final):
        old = os.path.join(root, f".{ds.name}.old-{os.getpid()}")
        os.replace(final, old)
        feats = os.path.join(old, "features.npz")  # keyed by sha256: still valid
        if os.path.exists(feats):
            os.replace(feats, os.path.join(tmp, "features.npz"))
    os.replace(tmp, final)
    if old:
        shutil.rmtree(old)
    log(f"{ds.name}: {sum(len(v) for v in files['pool'].values())} pool, "
        f"{sum(len(v) for v in files['test'].values())} test, {len(skipped)} skipped, {len(removed)} duplicates "
        f"removed, regimes {sorted(train)} ({info['seconds']} s)")
    return info


# --- SOURCES.md -----------------------------------------------------------------------------------

def sources_markdown(infos, root):
    lines = ["# Datasets of the accuracy benchmark (issue 19)", "",
             "Generated by `python bench/accuracy/datasets.py build` (or `... sources`) from "
             f"`{root}/<name>/SOURCE.json`; do not edit by hand.", "",
             "Every dataset is a public GitHub repository that commits the photos as individual files, read at "
             "the pinned commit (a local mirror where one exists, else `git clone`). Flowers and food sets are "
             "left out on purpose (reserved for an independent check).", "",
             "| dataset | domain | classes | test / class | pool / class | regimes | repository @ commit | licence |",
             "|---|---|---|---|---|---|---|---|"]
    for info in infos:
        counts = info["counts"]
        tests = sorted({c["test"] for c in counts.values()})
        pools = [c["pool"] for c in counts.values()]
        regimes = sorted({int(n.split("-")[1][1:]) for n in info["regimes"]})
        lines.append(f"| {info['name']} | {info['domain']} | {len(counts)} | {'/'.join(map(str, tests))} | "
                     f"{min(pools)}–{max(pools)} | {', '.join(f'n{k}' for k in regimes)} x seeds 0,1,2 | "
                     f"[{info['repo']}](https://github.com/{info['repo']}) @ `{info['commit'][:12]}` | "
                     f"{info['licence'].split(';')[0].split(' (')[0]} |")
    for info in infos:
        lines += ["", f"## {info['name']}: {info['domain']}", "",
                  f"- Source: {info['source']}.",
                  f"- Repository: https://github.com/{info['repo']} at commit `{info['commit']}`.",
                  f"- Licence: {info['licence']}.",
                  f"- Notes: {info['notes']}." if info["notes"] else "- Notes: none.",
                  f"- Split: {info['split']}.",
                  f"- Skipped (blob missing, LFS pointer, undecodable, a format tftl does not read, or under "
                  f"{MIN_SIDE} px): {len(info['skipped'])}"
                  + (" (" + "; ".join(f"{k} {v}" for k, v in sorted(_reasons(info['skipped']).items())) + ")"
                     if info["skipped"] else "") + "; exact "
                  f"duplicates removed: {len(info['duplicates_removed'])}"
                  + (" (" + "; ".join(sorted({r['reason'] for r in info['duplicates_removed']})) + ")"
                     if info["duplicates_removed"] else "") + ".",
                  f"- Near duplicates ({info['near_duplicates']['rule']}): {len(info['near_duplicates']['groups'])} "
                  f"groups kept within a class; highest test-to-pool detail correlation "
                  f"{info['near_duplicates']['max_test_pool_correlation']}.",
                  f"- Training regimes (photos in all): " + ", ".join(f"{k} {v}" for k, v in info["regimes"].items())
                  + ".", "",
                  "| class | source folders | usable in repo | after dedupe | test | pool |",
                  "|---|---|---|---|---|---|"]
        for label, c in info["counts"].items():
            lines.append(f"| {label} | {', '.join(info['classes'][label])} | {c['found']} | {c['after_dedupe']} | "
                         f"{c['test']} | {c['pool']} |")
    return "\n".join(lines) + "\n"


def _reasons(skipped):
    out = {}
    for r in skipped:
        key = r["reason"].split(":")[0]
        out[key] = out.get(key, 0) + 1
    return out


def write_sources(root, out=SOURCES_MD):
    infos = []
    for ds in REGISTRY:
        p = os.path.join(root, ds.name, "SOURCE.json")
        if os.path.exists(p):
            with open(p) as f:
                infos.append(json.load(f))
    with open(out + ".tmp", "w") as f:
        f.write(sources_markdown(infos, root))
    os.replace(out + ".tmp", out)
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("command", choices=("build", "sources", "list"))
    p.add_argument("--root", default=DEFAULT_ROOT)
    p.add_argument("--only", nargs="+", choices=sorted(BY_NAME), help="datasets to build (default: all)")
    p.add_argument("--force", action="store_true", help="rebuild even if SOURCE.json records the same spec")
    p.add_argument("--mirrors", default=MIRRORS)
    a = p.parse_args(argv)
    chosen = [BY_NAME[n] for n in a.only] if a.only else list(REGISTRY)
    if a.command == "list":
        for ds in chosen:
            print(f"{ds.name}\t{ds.domain}\t{ds.repo}@{ds.commit[:12]}\t{len(ds.classes)} classes")
        return 0
    if a.command == "build":
        for ds in chosen:
            build(ds, a.root, force=a.force, mirrors=a.mirrors)
    print("wrote", write_sources(a.root))
    return 0


if __name__ == "__main__":
    sys.exit(main())

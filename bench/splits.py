"""Dataset splits for the accuracy bench, built from flowers5 alone (no download).

flowers5 has 600 photos (5 classes, train/ 80 + val/ 40 per class). The recipe defaults were
tuned on train -> val, so the other splits are data the defaults were NOT tuned on:

  flowers5        train/ -> val/ (400 train, 200 test): the split the defaults were tuned on
  flowers5-swap   val/ -> train/ (200 train, 400 test): half the training data, other photos
  flowers5-foldK  all 600 pooled, a seeded stratified 3-fold split, fold K held out
                  (400 train, 200 test; each fold's test set mixes train/ and val/ photos)
  <split>-nN      any split above with its training part cut to N photos per class (a seeded
                  draw; same test part), e.g. flowers5-fold1-n30: 150 train, 200 test. A small
                  training set is where a fixed epoch count gives the fewest optimizer steps.

`materialize(name, root)` writes <root>/<name>/{train,test}/<class>/ as symlinks to the
shared photos (nothing is copied), the layout tftl-train and tftl-eval read.
"""

import os

import numpy as np

FLOWERS = os.environ.get("TFTL_FLOWERS", os.path.join(os.environ.get("TFTL_SHARED", "/work/shared"), "data",
                                                       "flowers5"))
SPLITS = ("flowers5", "flowers5-swap", "flowers5-fold0", "flowers5-fold1", "flowers5-fold2")
FOLDS = 3
FOLD_SEED = 13
SUBSET_SEED = 29


def classes():
    return sorted(d for d in os.listdir(os.path.join(FLOWERS, "train"))
                  if os.path.isdir(os.path.join(FLOWERS, "train", d)))


def _listing(part):
    """[(path, class index)] of flowers5/<part>, sorted."""
    out = []
    for c, name in enumerate(classes()):
        folder = os.path.join(FLOWERS, part, name)
        out += [(os.path.join(folder, f), c) for f in sorted(os.listdir(folder)) if not f.startswith(".")]
    return out


def split(name):
    """(train [(path, label)], test [(path, label)]) of split `name`."""
    base, _, per_class = name.rpartition("-n")
    if base and per_class.isdigit():
        train, test = split(base)
        return _subset(train, int(per_class), name), test
    if name == "flowers5":
        return _listing("train"), _listing("val")
    if name == "flowers5-swap":
        return _listing("val"), _listing("train")
    if name.startswith("flowers5-fold"):
        k = int(name[len("flowers5-fold"):])
        pool = _listing("train") + _listing("val")
        labels = np.array([c for _, c in pool])
        rng = np.random.default_rng(FOLD_SEED)
        fold = np.empty(len(pool), np.int64)
        for c in np.unique(labels):
            idx = rng.permutation(np.flatnonzero(labels == c))
            fold[idx] = np.arange(len(idx)) % FOLDS
        return ([pool[i] for i in np.flatnonzero(fold != k)], [pool[i] for i in np.flatnonzero(fold == k)])
    raise ValueError(f"unknown split {name!r}: one of {', '.join(SPLITS)}, optionally with -nN (N per class)")


def _subset(items, per_class, name):
    """`per_class` items of each class of `items`, drawn with SUBSET_SEED, in their original order."""
    labels = np.array([c for _, c in items])
    rng = np.random.default_rng(SUBSET_SEED)
    keep = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        if per_class > len(idx):
            raise ValueError(f"split {name!r}: class {c} has only {len(idx)} training photos")
        keep += rng.choice(idx, per_class, replace=False).tolist()
    return [items[i] for i in sorted(keep)]


def materialize(name, root):
    """<root>/<name>/{train,test}/<class>/ of symlinks; returns (train dir, test dir)."""
    names = classes()
    dirs = []
    for part, items in zip(("train", "test"), split(name)):
        base = os.path.join(root, name, part)
        for path, c in items:
            folder = os.path.join(base, names[c])
            os.makedirs(folder, exist_ok=True)
            link = os.path.join(folder, os.path.basename(path))
            if not os.path.lexists(link):
                os.symlink(path, link)
        dirs.append(base)
    return tuple(dirs)

"""Trunk features for training and validation: from a float16 cache or decoded live, one interface.

Training runs the model's `extract` (frozen trunk) then `train_features` (the trained
part). A `FeatureSource` hands the loop batches of features, so the loop never asks where
they came from:

  CachedFeatures  every image goes through the trunk once; epochs reuse the float16 rows.
                  With augmentation it holds `views` random-resized-crop + flip views per
                  image, drawn once from the seed and never regenerated (a fresh view costs
                  a full trunk pass, the very cost the cache removes); each epoch picks one
                  view per image. Caches over the RAM budget live in files read a batch
                  at a time (`RowFile`), reused when their key matches (resume).
  LiveFeatures    decode (fresh augmentation every epoch) and `extract` each batch.

Both draw their per-epoch randomness (`draw`) from the caller's Generator in the same
place, so a resumed run repeats an uninterrupted one exactly.

The cache key is the trunk's content (the flatbuffer hash, not the embedded trained state:
`extract` runs only frozen weights), the samples (path, size, mtime) and the view recipe,
so a fine-tuned file reuses the cache of the file it was trained from.

Samples: `Samples.from_paths([(path, label)])`, `Samples.from_arrays(images, labels)`
(float 0..255 images at the model's size, used as given: no augmentation), or `as_samples`
on either, an ImageFolder or a folder path.
"""

import concurrent.futures
import contextlib
import hashlib
import json
import math
import os
import queue
import threading
import time

import numpy as np

from tftl.runtime import contract, data, files
from tftl.runtime.errors import InputError
from tftl.runtime.progress import Progress
from tftl.runtime.rowfile import RowFile

CACHE_VERSION = "v3"
CACHE_FILES = ("features_train.f16", "features_val.f16")  # in cache_dir, each with .json and .scales.npy


def pool_for(threads=None):
    """A decode thread pool: `threads` workers, or one per CPU."""
    return concurrent.futures.ThreadPoolExecutor(threads or os.cpu_count() or 1)


class Samples:
    """Images (files or arrays) with integer labels (indices into the model's labels)."""

    def __init__(self, paths, images, labels):
        self.paths = paths
        self.images = images
        self.labels = np.asarray(labels, np.int64).reshape(-1)

    @classmethod
    def from_paths(cls, items):
        items = list(items)
        return cls([os.fspath(p) for p, _ in items], None, [int(label) for _, label in items])

    @classmethod
    def from_arrays(cls, images, labels):
        images = np.asarray(images)
        if images.ndim != 4 or images.shape[-1] != 3 or len(images) != len(np.asarray(labels).reshape(-1)):
            raise InputError(f"in-memory samples must be images [N, size, size, 3] and N labels, got "
                             f"{images.shape} and {np.shape(labels)}")
        return cls(None, images, labels)

    def __len__(self) -> int:
        return len(self.labels)

    def name(self, i) -> str:
        """What the skipped-files report calls sample i."""
        return self.paths[i] if self.paths is not None else f"<array {i}>"

    def load(self, i, seed, size) -> np.ndarray:
        """Image i as float32 [size, size, 3]; ImageError when unreadable."""
        if self.paths is None:
            return self.images[i].astype(np.float32, copy=False)
        rng = None if seed is None else np.random.default_rng(seed)
        return data.load_image(self.paths[i], size, augment=rng)

    def identity(self) -> list:
        """What the samples' features depend on, for the cache key."""
        if self.paths is None:
            return [hashlib.sha256(np.ascontiguousarray(self.images).tobytes()).hexdigest()]
        out = []
        for p in self.paths:
            try:
                st = os.stat(p)
                out.append([os.path.abspath(p), st.st_size, st.st_mtime_ns])
            except OSError:
                out.append([os.path.abspath(p), None, None])
        return out

    def check_labels(self, num_labels, what="samples"):
        if len(self) and (self.labels.min() < 0 or self.labels.max() >= num_labels):
            raise InputError(f"{what}: labels must be 0..{num_labels - 1} (the model's outputs), got "
                             f"{int(self.labels.min())}..{int(self.labels.max())}")


def as_samples(obj, labels=None, what="samples") -> Samples:
    """Samples from a Samples, an ImageFolder, a folder path (classes named after `labels`),
    an (images, labels) pair of arrays, or a list of (path, label)."""
    if isinstance(obj, Samples):
        return obj
    if isinstance(obj, (str, os.PathLike)):
        try:
            obj = data.ImageFolder(obj, labels=labels)
        except ValueError as e:
            raise InputError(f"{what}: {e}") from None
    if isinstance(obj, data.ImageFolder):
        return Samples.from_paths(obj.samples)
    if isinstance(obj, tuple) and len(obj) == 2 and isinstance(obj[0], np.ndarray):
        return Samples.from_arrays(*obj)
    return Samples.from_paths(obj)


# --- decoding ----------------------------------------------------------------------------


def prefetch(iterable, depth=2):
    """Iterate `iterable` in a background thread, `depth` items ahead (decode overlaps compute)."""
    q = queue.Queue(depth)
    stop = threading.Event()

    def put(item):
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def worker():
        try:
            for item in iterable:
                if not put(("item", item)):
                    return
        except BaseException as e:  # handed to the consumer
            put(("error", e))
        else:
            put(("done", None))

    thread = threading.Thread(target=worker, daemon=True)
    thread.start()
    try:
        while True:
            kind, item = q.get()
            if kind == "done":
                return
            if kind == "error":
                raise item
            yield item
    finally:
        stop.set()
        thread.join()


def decode(samples, indices, size, pool, seeds=None):
    """(ok indices, images [n_ok] or None, failures [(index, reason)]) for `indices`."""
    def one(i):
        try:
            return samples.load(i, None if seeds is None else int(seeds[i]), size), None
        except data.ImageError as e:
            return None, e.reason
        except OSError as e:  # a path that vanished or is not a file
            return None, e.strerror or str(e)

    results = list(pool.map(one, indices))
    ok = [int(i) for i, (img, _) in zip(indices, results) if img is not None]
    images = np.stack([img for img, _ in results if img is not None]) if ok else None
    failures = [(int(i), reason) for i, (img, reason) in zip(indices, results) if img is None]
    return np.asarray(ok, np.int64), images, failures


def decode_batches(samples, size, batch, pool, seeds=None, order=None, start=0):
    """Yield decode() of each batch of `order` (default: sample order) from batch `start`."""
    order = np.arange(len(samples)) if order is None else order
    for b in range(start, math.ceil(len(order) / batch)):
        yield decode(samples, order[b * batch:(b + 1) * batch], size, pool, seeds)


# --- sources -----------------------------------------------------------------------------


class FeatureSource:
    """Batches of trunk features over `samples`. `valid`: samples known to be usable."""

    samples: Samples
    valid: np.ndarray
    skipped: dict  # name -> reason, found while building (cache) or reading (live)
    info: dict

    def draw(self, rng):
        """This epoch's randomness for the source (view per sample, or augmentation seeds)."""
        raise NotImplementedError

    def batches(self, order, batch, start=0, draws=None):
        """Yield (indices used, features float32 [n, *feature_shape], failures [(i, reason)])."""
        raise NotImplementedError


class LiveFeatures(FeatureSource):
    """Decode and `extract` every batch: fresh augmentation each epoch, full trunk cost."""

    def __init__(self, session, samples, pool, *, augment):
        self.session, self.samples, self.pool, self.augment = session, samples, pool, augment
        self.valid = np.ones(len(samples), bool)
        self.skipped = {}
        self.info = {"enabled": False}

    def draw(self, rng):
        return rng.integers(0, 2**63 - 1, size=len(self.samples)) if self.augment else None

    def batches(self, order, batch, start=0, draws=None):
        gen = prefetch(decode_batches(self.samples, self.session.image_size, batch, self.pool, draws, order, start))
        with contextlib.closing(gen):
            for ok, images, failures in gen:
                # extract runs here, in the consumer's thread: one interpreter, one caller.
                yield ok, (self.session.extract(images) if len(ok) else None), failures


class CachedFeatures(FeatureSource):
    """Trunk features [views, n, *feature_shape] as float16 times a float32 scale per row.

    The per-row scale (max |x|) keeps float16's ~3 significant digits whatever the
    features' magnitude (a randomly initialised trunk gives ~1e-7, below float16's normal
    range; large activations would overflow it).
    """

    def __init__(self, features, scales, valid, skipped, info, samples):
        self.features, self.scales, self.valid, self.skipped = features, scales, valid, skipped
        self.info, self.samples = info, samples
        self.views = features.shape[0]

    @property
    def nbytes(self) -> int:
        return int(self.features.nbytes + self.scales.nbytes)

    def get(self, view, index) -> np.ndarray:
        """float32 features of rows `index` (view: an int or one view per row)."""
        feats = self.features[view, index].astype(np.float32)
        return feats * self.scales[view, index].reshape((-1,) + (1,) * (feats.ndim - 1))

    def draw(self, rng):
        return rng.integers(0, self.views, size=len(self.samples)) if self.views > 1 else None

    def batches(self, order, batch, start=0, draws=None):
        for b in range(start, math.ceil(len(order) / batch)):
            idx = np.asarray(order[b * batch:(b + 1) * batch], np.int64)
            yield idx, self.get(draws[idx] if draws is not None else 0, idx), []


# --- building the cache ------------------------------------------------------------------


def _view_seed(seed, view, index):
    """Augmentation seed of cached view `view` of sample `index`: fixed by the run seed alone."""
    return np.random.SeedSequence([seed, 1, view, index]).generate_state(2, np.uint64)[0]


def cache_key(session, samples, views, augment, seed) -> str:
    blob = json.dumps([session.trunk_hash, samples.identity(), views, augment, seed, session.image_size,
                       CACHE_VERSION])
    return hashlib.sha256(blob.encode()).hexdigest()


def _reuse(path, key, shape, samples):
    """The file cache at `path` when its side file matches `key`, else None."""
    try:
        with open(path + ".json", encoding="utf-8") as f:
            info = json.load(f)
        if info.get("key") != key or info.get("shape") != list(shape):
            return None
        features = RowFile(path, shape, np.float16)
        scales = np.load(path + ".scales.npy", allow_pickle=False)
        valid = np.asarray(info["valid"], bool)
        if scales.shape != shape[:2] or valid.shape != (shape[1],):
            return None
        return CachedFeatures(features, scales, valid, dict(info["skipped"]),
                              {"storage": "file, reused", "seconds": 0.0}, samples)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _allocate(path, shape):
    """float16 array of `shape` in RAM, or a RowFile at `path` (rows read per batch, never
    mapped, so never resident all at once) with its disk space reserved up front."""
    if path is None:
        return np.empty(shape, np.float16)
    with contextlib.suppress(OSError):
        os.unlink(path + ".json")
    nbytes = 2 * math.prod(shape)
    try:
        with open(path, "wb") as f:
            files.preallocate(f, nbytes)
    except OSError as e:
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise InputError(f"cannot reserve {nbytes / 2**20:.0f} MiB for the feature cache {path} "
                         f"({e.strerror or e}) — free disk space, raise --cache-ram-mb, or pass "
                         "--no-cache-features") from None
    return RowFile(path, shape, np.float16, writable=True)


def build_cache(session, samples, pool, *, views, augment, seed, path=None, stop=None, err=None, desc=""):
    """Run `extract` once per (view, sample). path: a RowFile (reused when its key matches)."""
    t0 = time.monotonic()
    shape = (views, len(samples), *session.feature_shape)
    key = cache_key(session, samples, views, augment, seed)
    if path is not None:
        found = _reuse(path, key, shape, samples)
        if found is not None:
            return found
    features = _allocate(path, shape)
    scales = np.ones(shape[:2], np.float32)
    valid = np.ones(len(samples), bool)
    skipped = {}
    batch = session.batch
    with Progress(views * math.ceil(len(samples) / batch), desc=desc, stream=err) as bar:
        for view in range(views):
            seeds = [_view_seed(seed, view, i) for i in range(len(samples))] if augment else None
            gen = prefetch(decode_batches(samples, session.image_size, batch, pool, seeds))
            with contextlib.closing(gen):
                for ok, images, failures in gen:
                    if stop is not None:
                        stop.check()
                    for i, reason in failures:
                        valid[i] = False
                        skipped.setdefault(samples.name(i), reason)
                    if len(ok):
                        _store(features, scales, view, ok, session.extract(images))
                    bar.update(**{"img/s": (bar.step + 1) * batch / max(time.monotonic() - t0, 1e-9)})
    if path is not None:
        _persist(path, features, scales, key, shape, valid, skipped)
    info = {"storage": "ram" if path is None else "file", "seconds": time.monotonic() - t0}
    return CachedFeatures(features, scales, valid, skipped, info, samples)


def _store(features, scales, view, ok, feats):
    flat = np.abs(feats.reshape(len(ok), -1)).max(axis=1)
    scale = np.where(np.isfinite(flat) & (flat > 0), flat, 1.0).astype(np.float32)
    scales[view, ok] = scale
    features[view, ok] = (feats / scale.reshape((-1,) + (1,) * (feats.ndim - 1))).astype(np.float16)


def _persist(path, features, scales, key, shape, valid, skipped):
    features.flush()
    with files.atomic_write(path + ".scales.npy") as f:
        np.save(f, scales, allow_pickle=False)
    with files.atomic_write(path + ".json") as f:
        f.write(json.dumps({"key": key, "shape": list(shape), "valid": valid.tolist(),
                            "skipped": sorted(skipped.items())}).encode())


def remove_cache(cache_dir) -> None:
    """Delete the file caches `open_sources` wrote in `cache_dir` (a finished run's)."""
    for name in CACHE_FILES:
        for suffix in ("", ".json", ".scales.npy"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(cache_dir, name + suffix))


def default_cache(session) -> bool:
    """Cache by default only when a trunk makes features smaller than images (for ft_bias,
    ft_norm and tinytl the "trunk" is the stem conv, whose output is larger)."""
    return session.has_trunk and math.prod(session.feature_shape) < 3 * session.image_size ** 2


def open_sources(session, train, val, pool, *, cache, views, augment, seed, cache_dir, ram_mb,
                 stop=None, err=None):
    """(train source, val source or None). cache None: `default_cache(session)`."""
    use_cache = default_cache(session) if cache is None else bool(cache)
    if not use_cache:
        return (LiveFeatures(session, train, pool, augment=augment),
                LiveFeatures(session, val, pool, augment=False) if val is not None and len(val) else None)
    views = views if augment else 1
    row = 2 * math.prod(session.feature_shape)
    on_disk = cache_dir is not None and row * (views * len(train) + len(val or ())) > ram_mb * 2**20
    where = (lambda name: os.path.join(cache_dir, name)) if on_disk else (lambda name: None)
    # extract runs on an interpreter of its own, freed before training allocates its arenas
    with session.transient(session.extract_signature):
        src = build_cache(session, train, pool, views=views, augment=augment, seed=seed,
                          path=where(CACHE_FILES[0]), stop=stop, err=err,
                          desc=f"caching features ({views} view{'s' * (views > 1)})")
        val_src = None
        if val is not None and len(val):
            val_src = build_cache(session, val, pool, views=1, augment=False, seed=seed,
                                  path=where(CACHE_FILES[1]), stop=stop, err=err,
                                  desc="caching validation features")
    seconds = src.info["seconds"] + (val_src.info["seconds"] if val_src else 0.0)
    nbytes = src.nbytes + (val_src.nbytes if val_src else 0)
    src.info = {"enabled": True, "views": views, "storage": src.info["storage"], "bytes": nbytes,
                "seconds": round(seconds, 3)}
    return src, val_src

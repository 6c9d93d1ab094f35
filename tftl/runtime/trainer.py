"""Fine-tune a tftl model on a folder of images with the TFLite runtime only (tftl-train).

Training always runs the model's `extract` (frozen trunk, inference) then `train_features`
(the trained part): bit-identical to the `train` signature (checked on mbv2 and
mbv3_small), but it weights samples, so a partial last batch is padded with weight 0, and
its features can be cached.

Feature cache (default on when the model has a frozen trunk): every image goes through
the trunk once, and every epoch reuses the float16 features, so an epoch costs only the
trained blocks. With augmentation the cache holds `cache_views` random-resized-crop + flip
views per image, drawn once and never regenerated: regenerating a view costs a full trunk
pass (the very cost the cache removes), and a fixed, seed-determined pool keeps resumed
runs exact. Each epoch picks one cached view per image at random. A few views give most of
the benefit of augmentation for a linear-probe-like head; use --no-cache-features for fresh
views every epoch at full trunk cost. Caches larger than --cache-ram-mb live in memmap files
in the checkpoint folder (reused on --resume).

Reproducible and resumable: one numpy Generator (seeded by --seed) draws each epoch's order,
augmentation seeds and view choices; checkpoints store its state at the start of the epoch
in progress plus the batch position, so --resume (after an epoch or after Ctrl-C mid-epoch)
continues with exactly the losses of an uninterrupted run.

No TensorFlow here: numpy, Pillow, the standard library and a TFLite runtime only.
"""

import concurrent.futures
import contextlib
import dataclasses
import hashlib
import json
import math
import os
import queue
import signal
import sys
import threading
import time

import numpy as np

from tftl.runtime import checkpoint as ckpt
from tftl.runtime import data
from tftl.runtime.progress import Progress
from tftl.runtime.session import TRAIN_SIGNATURES, Session, save_model

DEFAULT_EPOCHS = 10  # flowers5, mbv2 MobileTL-3, seed 0: 5 ep 0.85, 10 ep 0.87, 10 ep @5e-4 0.88
DEFAULT_LR = 5e-4
DEFAULT_CACHE_VIEWS = 2
DEFAULT_CACHE_RAM_MB = 512
CHECKPOINT_NAME = "checkpoint.npz"
CHECKPOINT_FORMAT = "tftl-train-1"
EXIT_OK, EXIT_DIVERGED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
# Settings that shape the run; a resume with other values is allowed but not exact.
_TRAJECTORY_SETTINGS = ("epochs", "lr", "warmup_steps", "augment", "cache_features", "cache_views", "seed",
                        "train_images")


class TrainError(ValueError):
    """Bad input (images, model, options, checkpoint): one line, exit 2."""


class Diverged(RuntimeError):
    """The loss became NaN or infinite: exit 1, the last good checkpoint is kept."""


class Interrupted(Exception):
    """Ctrl-C: a checkpoint was saved, exit 130."""


class _Abort(KeyboardInterrupt):
    """A second Ctrl-C: stop at once without saving."""


@dataclasses.dataclass
class TrainConfig:
    model: str
    images: str
    val: str = None
    val_split: float = None
    epochs: int = DEFAULT_EPOCHS
    lr: float = DEFAULT_LR
    warmup_steps: int = None  # None: min(50, total steps // 10), as the Keras reference
    batch: int = None
    augment: bool = True
    threads: int = None
    cache_features: bool = None  # None: on when the model has a frozen trunk
    cache_views: int = DEFAULT_CACHE_VIEWS
    cache_ram_mb: float = DEFAULT_CACHE_RAM_MB
    checkpoint_dir: str = None
    resume: bool = False
    output: str = None
    history: str = None
    plot: str = None
    seed: int = 0


@dataclasses.dataclass
class TrainResult:
    output: str
    checkpoint: str
    history: dict


def cosine_lr(base_lr, step, total_steps, warmup_steps=0):
    """Linear warm-up then cosine decay to 0 (tftl.training.cosine_lr, without TensorFlow)."""
    if warmup_steps and step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    t = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * base_lr * (1.0 + math.cos(math.pi * min(1.0, t)))


def default_output(model_path) -> str:
    stem, _ = os.path.splitext(os.fspath(model_path))
    return f"{stem}_finetuned.tflite"


def is_placeholder(label, slot) -> bool:
    return label == f"class_{slot}"


def plan_labels(model_labels, folders, model_path="the model") -> list:
    """The output model's labels: folders keep a slot of the same name, new folders take the
    placeholder slots (class_i) in sorted order; leftover placeholders stay."""
    labels = list(model_labels)
    k = len(labels)
    folders = sorted(folders)
    if len(folders) > k:
        raise TrainError(
            f"{len(folders)} class folders but {model_path} has {k} label slots — re-export it with "
            f"--classes {len(folders)} (or more): python -m converters.export --classes {len(folders)} ..."
        )
    new = [f for f in folders if f not in labels]
    free = [i for i, label in enumerate(labels) if is_placeholder(label, i) and label not in folders]
    if len(new) > len(free):
        if not any(is_placeholder(label, i) for i, label in enumerate(labels)):
            raise TrainError(
                f"folders {new} are not labels of {model_path} {labels} — rename the folders, or re-export "
                "the model with --labels / --classes"
            )
        raise TrainError(
            f"{len(new)} new class folders but only {len(free)} free label slots in {model_path} — re-export "
            f"it with --classes {len(folders)} (or more)"
        )
    for name, slot in zip(new, free):
        labels[slot] = name
    return labels


def _remap(folder, labels):
    """(path, label index in `labels`) for an ImageFolder built without labels."""
    index = {name: i for i, name in enumerate(labels)}
    return [(path, index[folder.classes[label]]) for path, label in folder.samples]


def _load_folder(root, what):
    try:
        return data.ImageFolder(root)
    except ValueError as e:
        raise TrainError(f"{what}: {e}") from None


# --- decoding and prefetch ------------------------------------------------------------


def _decode(job):
    path, seed, size = job
    rng = None if seed is None else np.random.default_rng(seed)
    try:
        return data.load_image(path, size, augment=rng), None
    except data.ImageError as e:
        return None, e.reason


def _prefetch(iterable, depth=2):
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


def decode_batches(samples, size, batch, pool, seeds=None):
    """Yield (indices, images [n<=batch], failures [(index, reason)]) over `samples` in order.

    seeds: per-sample augmentation seeds (None: the deterministic eval crop).
    """
    for start in range(0, len(samples), batch):
        idx = list(range(start, min(start + batch, len(samples))))
        jobs = [(samples[i][0], None if seeds is None else seeds[i], size) for i in idx]
        results = list(pool.map(_decode, jobs))
        ok = [i for i, (img, _) in zip(idx, results) if img is not None]
        images = np.stack([img for img, _ in results if img is not None]) if ok else None
        failures = [(i, reason) for i, (img, reason) in zip(idx, results) if img is None]
        yield ok, images, failures


def predict_samples(session, samples, pool, *, skipped=None, stop=None):
    """(probabilities [n_ok, K], labels [n_ok]) of the readable samples, eval crop."""
    probs, labels = [], []
    gen = _prefetch(decode_batches(samples, session.image_size, session.batch, pool))
    with contextlib.closing(gen):
        for ok, images, failures in gen:
            if stop is not None:
                stop.check()
            for i, reason in failures:
                if skipped is not None:
                    skipped.setdefault(samples[i][0], reason)
            if ok:
                probs.append(session.predict(images))
                labels.extend(samples[i][1] for i in ok)
    k = len(session.labels)
    return (np.concatenate(probs) if probs else np.zeros((0, k), np.float32)), np.asarray(labels, np.int64)


def metrics(probs, labels, label_names) -> dict:
    """accuracy, n, loss, per_class {name: {accuracy, n}} and confusion [true][pred] (K x K)."""
    k = len(label_names)
    n = int(len(labels))
    pred = np.argmax(probs, axis=1) if n else np.zeros(0, np.int64)
    confusion = np.zeros((k, k), np.int64)
    np.add.at(confusion, (labels, pred), 1)
    per_class = {}
    for c in range(k):
        total = int(confusion[c].sum())
        if total:
            per_class[label_names[c]] = {"accuracy": float(confusion[c, c] / total), "n": total}
    p_true = probs[np.arange(n), labels] if n else np.zeros(0)
    return {
        "accuracy": float((pred == labels).mean()) if n else None,
        "n": n,
        "loss": float(-np.log(np.maximum(p_true, 1e-12)).mean()) if n else None,
        "per_class": per_class,
        "confusion": confusion.tolist(),
    }


# --- Ctrl-C -------------------------------------------------------------------------------


class _StopFlag:
    """First Ctrl-C asks to stop at the next step boundary; a second aborts at once."""

    def __init__(self, err):
        self.err = err
        self.requested = False
        self._old = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc):
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)

    def _handle(self, signum, frame):
        if self.requested:
            raise _Abort()
        self.requested = True
        self.err.write("\nstopping after this step and saving a checkpoint (Ctrl-C again to abort)\n")
        self.err.flush()

    def check(self):
        if self.requested:
            raise Interrupted()


# --- feature cache ------------------------------------------------------------------------


def _view_seed(seed, view, index):
    """Augmentation seed of cached view `view` of sample `index`: fixed by --seed alone."""
    return np.random.SeedSequence([seed, 1, view, index]).generate_state(2, np.uint64)[0]


class FeatureCache:
    """Trunk features [views, n, *feature_shape] as float16 times a float32 scale per row.

    The per-row scale (max |x|) keeps float16's ~3 significant digits whatever the
    features' magnitude (a randomly initialised trunk gives ~1e-7, below float16's normal
    range; large activations would overflow it).
    """

    def __init__(self, features, scales, valid, skipped, storage, seconds):
        self.features = features
        self.scales = scales
        self.valid = valid
        self.skipped = skipped
        self.storage = storage
        self.seconds = seconds

    @property
    def nbytes(self):
        return int(self.features.nbytes + self.scales.nbytes)

    def get(self, view, index) -> np.ndarray:
        """float32 features of rows `index` (view: an int or one view per row)."""
        feats = self.features[view, index].astype(np.float32)
        scale = self.scales[view, index].reshape((-1,) + (1,) * (feats.ndim - 1))
        return feats * scale


def _cache_key(session, samples, views, augment, seed):
    blob = json.dumps([session.model_hash, [[os.path.abspath(p), int(l)] for p, l in samples],
                       views, augment, seed, session.image_size, "v2"])
    return hashlib.sha256(blob.encode()).hexdigest()


def build_cache(session, samples, pool, *, views, augment, seed, path=None, stop=None, err=None, desc=""):
    """Run `extract` once per (view, image). path: memmap file (reused when its key matches)."""
    t0 = time.monotonic()
    shape = (views, len(samples), *session.feature_shape)
    key = _cache_key(session, samples, views, augment, seed)
    side = None if path is None else path + ".json"
    scales_path = None if path is None else path + ".scales.npy"
    if side and os.path.isfile(side) and os.path.isfile(path):
        try:
            with open(side, encoding="utf-8") as f:
                info = json.load(f)
            if info.get("key") == key and info.get("shape") == list(shape):
                features = np.memmap(path, np.float16, "r", shape=shape)
                scales = np.load(scales_path, allow_pickle=False)
                valid = np.asarray(info["valid"], bool)
                return FeatureCache(features, scales, valid, dict(info["skipped"]), "memmap, reused", 0.0)
        except (OSError, ValueError, KeyError, TypeError):
            pass
    if path is None:
        features = np.empty(shape, np.float16)
    else:
        with contextlib.suppress(OSError):
            os.unlink(side)
        features = np.memmap(path, np.float16, "w+", shape=shape)
    scales = np.ones(shape[:2], np.float32)
    valid = np.ones(len(samples), bool)
    skipped = {}
    steps = views * math.ceil(len(samples) / session.batch)
    with Progress(steps, desc=desc, stream=err) as bar:
        done = 0
        for view in range(views):
            seeds = [_view_seed(seed, view, i) for i in range(len(samples))] if augment else None
            gen = _prefetch(decode_batches(samples, session.image_size, session.batch, pool, seeds))
            with contextlib.closing(gen):
                for ok, images, failures in gen:
                    if stop is not None:
                        stop.check()
                    for i, reason in failures:
                        valid[i] = False
                        skipped.setdefault(samples[i][0], reason)
                    if ok:
                        feats = session.extract(images)
                        flat = np.abs(feats.reshape(len(ok), -1)).max(axis=1)
                        scale = np.where(np.isfinite(flat) & (flat > 0), flat, 1.0).astype(np.float32)
                        scales[view, ok] = scale
                        features[view, ok] = (feats / scale.reshape((-1,) + (1,) * (feats.ndim - 1))
                                              ).astype(np.float16)
                    done += 1
                    bar.update(done, **{"img/s": done * session.batch / max(time.monotonic() - t0, 1e-9)})
    if path is not None:
        features.flush()
        with ckpt.atomic_write(scales_path) as f:
            np.save(f, scales, allow_pickle=False)
        with ckpt.atomic_write(side) as f:
            f.write(json.dumps({"key": key, "shape": list(shape), "valid": valid.tolist(),
                                "skipped": sorted(skipped.items())}).encode())
    storage = "ram" if path is None else "memmap"
    return FeatureCache(features, scales, valid, skipped, storage, time.monotonic() - t0)


# --- the trainer --------------------------------------------------------------------------


def _check_config(cfg):
    if not isinstance(cfg.epochs, int) or cfg.epochs < 1:
        raise TrainError(f"--epochs must be a positive integer, got {cfg.epochs!r}")
    if not (isinstance(cfg.lr, (int, float)) and math.isfinite(cfg.lr) and cfg.lr > 0):
        raise TrainError(f"--lr must be a positive number, got {cfg.lr!r}")
    if cfg.val and cfg.val_split is not None:
        raise TrainError("pass --val DIR or --val-split F, not both")
    if cfg.val_split is not None and not 0.0 < cfg.val_split < 1.0:
        raise TrainError(f"--val-split must be between 0 and 1 (exclusive), got {cfg.val_split!r}")
    if cfg.cache_views < 1:
        raise TrainError(f"--cache-views must be >= 1, got {cfg.cache_views!r}")
    if cfg.threads is not None and cfg.threads < 1:
        raise TrainError(f"--threads must be >= 1, got {cfg.threads!r}")
    if cfg.seed < 0:
        raise TrainError(f"--seed must be >= 0, got {cfg.seed!r}")
    if cfg.warmup_steps is not None and cfg.warmup_steps < 0:
        raise TrainError(f"--warmup-steps must be >= 0, got {cfg.warmup_steps!r}")
    if cfg.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise TrainError("--plot needs matplotlib: pip install matplotlib (or drop --plot)") from None


def _write_json(path, obj):
    with ckpt.atomic_write(path) as f:
        f.write((json.dumps(obj, indent=2, allow_nan=False) + "\n").encode("utf-8"))


def plot_history(history, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [e["epoch"] for e in history["epochs"]]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ax1.plot(epochs, [e["loss"] for e in history["epochs"]], "o-", label="train")
    if any(e["val_loss"] is not None for e in history["epochs"]):
        ax1.plot(epochs, [e["val_loss"] for e in history["epochs"]], "o-", label="val")
    ax1.set(xlabel="epoch", ylabel="loss", title="loss")
    ax2.plot(epochs, [e["train_accuracy"] for e in history["epochs"]], "o-", label="train")
    if any(e["val_accuracy"] is not None for e in history["epochs"]):
        ax2.plot(epochs, [e["val_accuracy"] for e in history["epochs"]], "o-", label="val")
    ax2.set(xlabel="epoch", ylabel="top-1 accuracy", title="accuracy", ylim=(0, 1))
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def train(cfg: TrainConfig, *, out=None, err=None, on_epoch_end=None) -> TrainResult:
    """Run tftl-train. Raises TrainError (bad input), Diverged, Interrupted (checkpoint saved).

    on_epoch_end(entry): called after each epoch's checkpoint is written (tests use it to
    stop a run between epochs, by raising KeyboardInterrupt).
    """
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err

    def say(msg, stream=None):
        stream = out if stream is None else stream
        stream.write(msg + "\n")
        stream.flush()

    _check_config(cfg)
    session = Session(cfg.model, threads=cfg.threads)
    session.require(*TRAIN_SIGNATURES, purpose="training")
    if cfg.batch is not None and cfg.batch != session.batch:
        raise TrainError(
            f"--batch {cfg.batch} does not match the model's fixed batch {session.batch} — drop --batch, or "
            f"re-export the model with --batch {cfg.batch}"
        )
    batch = session.batch

    folder = _load_folder(cfg.images, "training images")
    labels = plan_labels(session.labels, folder.classes, session.path)
    if cfg.val:
        val_folder = _load_folder(cfg.val, "validation images")
        unknown = [c for c in val_folder.classes if c not in labels]
        if unknown:
            raise TrainError(f"validation folders {unknown} are not training classes {folder.classes} — "
                             "rename or remove them")
        train_samples, val_samples = _remap(folder, labels), _remap(val_folder, labels)
    elif cfg.val_split is not None:
        tr, va = folder.split(cfg.val_split, seed=cfg.seed)
        train_samples, val_samples = _remap(tr, labels), _remap(va, labels)
    else:
        train_samples, val_samples = _remap(folder, labels), []

    output = cfg.output or default_output(cfg.model)
    ckpt_dir = cfg.checkpoint_dir or output + ".ckpt"
    ckpt_path = os.path.join(ckpt_dir, CHECKPOINT_NAME)
    out_dir = os.path.dirname(os.path.abspath(output))
    if not os.path.isdir(out_dir):
        raise TrainError(f"folder {out_dir} of --output {output} does not exist — create it or pass another --output")
    for path, what in ((cfg.history, "--history"), (cfg.plot, "--plot")):
        if path and not os.path.isdir(os.path.dirname(os.path.abspath(path))):
            raise TrainError(f"folder of {what} {path} does not exist — create it first")
    try:
        os.makedirs(ckpt_dir, exist_ok=True)
    except OSError as e:
        raise TrainError(f"cannot create checkpoint folder {ckpt_dir} ({e.strerror}) — pass --checkpoint-dir") from None
    # cache by default only when a trunk makes the features smaller than the images (for
    # ft_bias / ft_norm / tinytl the "trunk" is the stem conv, whose output is larger)
    default_cache = (session.has_trunk
                     and int(np.prod(session.feature_shape)) < 3 * session.image_size ** 2)
    use_cache = default_cache if cfg.cache_features is None else bool(cfg.cache_features)
    views = cfg.cache_views if cfg.augment else 1

    # --- resume ---------------------------------------------------------------------------
    resumed = None
    if cfg.resume:
        if os.path.exists(ckpt_path):
            arrays, meta = ckpt.load_checkpoint(ckpt_path)
            if meta.get("format") != CHECKPOINT_FORMAT:
                raise TrainError(f"checkpoint {ckpt_path} is not a tftl-train checkpoint — remove it or pass "
                                 "a different --checkpoint-dir")
            ckpt.check_compatible(meta, model_hash=session.model_hash, labels=labels, path=ckpt_path)
            session.restore_state(arrays, what=f"checkpoint {ckpt_path}")
            resumed = meta
        else:
            say(f"note: no checkpoint in {ckpt_dir}; starting from the model's weights", err)

    pool = concurrent.futures.ThreadPoolExecutor(cfg.threads or os.cpu_count() or 1)
    skipped = dict(resumed.get("skipped", {})) if resumed else {}
    history = {
        "model": os.fspath(cfg.model),
        "output": output,
        "labels": labels,
        "epochs": list(resumed["history"]) if resumed else [],
        "skipped": [],
    }
    try:
        with _StopFlag(err) as stop:
            # --- feature cache -----------------------------------------------------------
            train_cache = val_cache = None
            cache_info = {"enabled": use_cache}
            if use_cache:
                row = int(np.prod(session.feature_shape)) * 2
                total = row * (views * len(train_samples) + len(val_samples))
                on_disk = total > cfg.cache_ram_mb * 2**20
                train_cache = build_cache(
                    session, train_samples, pool, views=views, augment=cfg.augment, seed=cfg.seed,
                    path=os.path.join(ckpt_dir, "features_train.f16") if on_disk else None,
                    stop=stop, err=err, desc=f"caching features ({views} view{'s' * (views > 1)})")
                if val_samples:
                    val_cache = build_cache(
                        session, val_samples, pool, views=1, augment=False, seed=cfg.seed,
                        path=os.path.join(ckpt_dir, "features_val.f16") if on_disk else None,
                        stop=stop, err=err, desc="caching validation features")
                for c in (train_cache, val_cache):
                    if c is not None:
                        for path, reason in c.skipped.items():
                            skipped.setdefault(path, reason)
                cache_info.update(views=views, storage=train_cache.storage,
                                  bytes=train_cache.nbytes + (val_cache.nbytes if val_cache else 0),
                                  seconds=round(train_cache.seconds + (val_cache.seconds if val_cache else 0), 3))
                train_index = np.flatnonzero(train_cache.valid)
                if not len(train_index):
                    raise TrainError(f"none of the {len(train_samples)} training images in {cfg.images} "
                                     "could be read — check the files")
                say(f"feature cache: {views} view(s) x {len(train_index)} images, "
                    f"{cache_info['bytes'] / 2**20:.1f} MiB ({train_cache.storage}), {train_cache.seconds:.1f} s", err)
            else:
                train_index = np.arange(len(train_samples))
            history["feature_cache"] = cache_info

            n = len(train_index)
            steps_per_epoch = math.ceil(n / batch)
            total_steps = steps_per_epoch * cfg.epochs
            warmup = min(50, total_steps // 10) if cfg.warmup_steps is None else cfg.warmup_steps
            settings = dict(epochs=cfg.epochs, lr=cfg.lr, warmup_steps=warmup, augment=cfg.augment,
                            cache_features=use_cache, cache_views=views, seed=cfg.seed, train_images=n,
                            batch=batch, val=cfg.val, val_split=cfg.val_split, val_images=len(val_samples))
            history["settings"] = settings

            rng = np.random.default_rng(cfg.seed)
            epoch, position, global_step = 0, 0, 0
            partial = {}
            if resumed:
                old = resumed.get("settings", {})
                changed = [f"{k} {old.get(k)!r} -> {settings[k]!r}" for k in _TRAJECTORY_SETTINGS
                           if old.get(k) != settings[k]]
                if changed:
                    say("warning: resuming with changed settings (" + ", ".join(changed) +
                        "): the run will not match an uninterrupted one", err)
                epoch, position, global_step = resumed["epoch"], resumed["position"], resumed["global_step"]
                rng.bit_generator.state = resumed["rng_state"]
                partial = resumed.get("partial") or {}
                position = min(position, steps_per_epoch)  # == steps_per_epoch: only validation left
                say(f"resumed from {ckpt_path}: epoch {epoch}" +
                    (f", step {position}/{steps_per_epoch}" if position else "") +
                    f", global step {global_step}", err)

            state = {"epoch": epoch, "position": position, "global_step": global_step,
                     "rng_state": rng.bit_generator.state, "partial": partial}

            def save_ckpt():
                meta = {
                    "format": CHECKPOINT_FORMAT,
                    "model_hash": session.model_hash,
                    "labels": labels,
                    "epoch": state["epoch"],
                    "position": state["position"],
                    "global_step": state["global_step"],
                    "rng_state": state["rng_state"],
                    "partial": state["partial"],
                    "settings": settings,
                    "history": history["epochs"],
                    "skipped": skipped,
                }
                ckpt.save_checkpoint(ckpt_path, session.state(), meta)

            try:
                while state["epoch"] < cfg.epochs:
                    _run_epoch(session, cfg, state, rng, labels, train_samples, train_index, val_samples,
                               train_cache, val_cache, pool, stop, skipped, history, steps_per_epoch,
                               total_steps, warmup, views, use_cache, say, err)
                    save_ckpt()
                    if cfg.history:
                        history["skipped"] = _skipped_list(skipped)
                        _write_json(cfg.history, history)
                    if on_epoch_end is not None:
                        on_epoch_end(history["epochs"][-1])
            except _Abort:
                raise
            except (Interrupted, KeyboardInterrupt):
                save_ckpt()
                say(f"interrupted: checkpoint saved to {ckpt_path} (epoch {state['epoch']}, step "
                    f"{state['position']}/{steps_per_epoch}) — continue with --resume", err)
                raise Interrupted(ckpt_path) from None
            except Diverged as e:
                kept = (f"the last good checkpoint (epoch {state['epoch']}) is kept in {ckpt_path}"
                        if os.path.exists(ckpt_path) else "no checkpoint was written")
                raise Diverged(f"{e}; {kept} — lower --lr (now {cfg.lr:g}) and train again") from None
    except _Abort:
        raise
    except (Interrupted, KeyboardInterrupt) as e:
        if isinstance(e, Interrupted) and e.args:
            raise
        say("interrupted before training started — nothing to save", err)
        raise Interrupted() from None
    finally:
        pool.shutdown(wait=True)

    # --- outputs --------------------------------------------------------------------------
    history["skipped"] = _skipped_list(skipped)
    last = history["epochs"][-1] if history["epochs"] else {}
    summary = {
        "epochs": len(history["epochs"]),
        "learning_rate": cfg.lr,
        "train_images": n,
        "loss": last.get("loss"),
        "train_accuracy": last.get("train_accuracy"),
        "val_accuracy": last.get("val_accuracy"),
        "base_model": session.model_hash,
    }
    try:
        save_model(output, session.model_file, labels, session.state(), {"training": summary})
    except OSError as e:
        raise TrainError(f"cannot write {output} ({e.strerror or e}) — pass another --output") from None
    if cfg.history:
        _write_json(cfg.history, history)
    if cfg.plot:
        plot_history(history, cfg.plot)
    if skipped:
        say(f"warning: skipped {len(skipped)} unreadable image(s):", err)
        for path, reason in sorted(skipped.items()):
            say(f"  {path}: {reason}", err)
    say(f"wrote {output} ({len([l for i, l in enumerate(labels) if not is_placeholder(l, i)])} classes"
        + (f", val accuracy {last['val_accuracy']:.3f}" if last.get("val_accuracy") is not None else "") + ")")
    return TrainResult(output, ckpt_path, history)


def _skipped_list(skipped):
    return [{"path": p, "reason": r} for p, r in sorted(skipped.items())]


def _run_epoch(session, cfg, state, rng, labels, train_samples, train_index, val_samples, train_cache,
               val_cache, pool, stop, skipped, history, steps_per_epoch, total_steps, warmup, views,
               use_cache, say, err):
    """One epoch from state["position"]; updates `state` step by step, appends to history."""
    batch = session.batch
    n = len(train_index)
    epoch = state["epoch"]
    # Everything random in this epoch comes from here, drawn up front.
    rng.bit_generator.state = state["rng_state"]
    perm = train_index[rng.permutation(n)]
    if use_cache:
        view_of = rng.integers(0, views, size=len(train_samples)) if views > 1 else None
        seeds = None
    else:
        seeds = rng.integers(0, 2**63 - 1, size=len(train_samples)) if cfg.augment else None
    next_rng_state = rng.bit_generator.state

    partial = state["partial"] or {}
    loss_sum = float(partial.get("loss_sum", 0.0))
    correct = int(partial.get("correct", 0))
    seen = int(partial.get("seen", 0))
    train_seconds = float(partial.get("train_seconds", 0.0))
    epoch_skipped = set(partial.get("skipped", []))
    if use_cache:  # unreadable training images were dropped when the cache was built
        epoch_skipped.update(train_samples[i][0] for i in np.flatnonzero(~train_cache.valid))
    start = state["position"]

    def batches():
        for b in range(start, steps_per_epoch):
            idx = perm[b * batch:(b + 1) * batch]
            if use_cache:
                feats = train_cache.get(view_of[idx] if view_of is not None else 0, idx)
                yield b, idx, feats, [], None
            else:
                jobs = [(train_samples[i][0], None if seeds is None else int(seeds[i]), session.image_size)
                        for i in idx]
                results = list(pool.map(_decode, jobs))
                ok = [i for i, (img, _) in zip(idx, results) if img is not None]
                fails = [(int(i), reason) for i, (img, reason) in zip(idx, results) if img is None]
                images = np.stack([img for img, _ in results if img is not None]) if ok else None
                yield b, np.asarray(ok, np.int64), None, fails, images

    t_start = time.monotonic()
    t_seconds0 = train_seconds
    gen = _prefetch(batches()) if not use_cache else batches()
    with Progress(steps_per_epoch, desc=f"epoch {epoch + 1}/{cfg.epochs}", stream=err) as bar:
        bar.step = start
        with contextlib.closing(gen):
            for b, idx, feats, fails, images in gen:
                stop.check()
                for i, reason in fails:
                    skipped.setdefault(train_samples[i][0], reason)
                    epoch_skipped.add(train_samples[i][0])
                if len(idx):
                    if feats is None:
                        feats = session.extract(images)
                    y = np.asarray([train_samples[i][1] for i in idx], np.int32)
                    lr = cosine_lr(cfg.lr, state["global_step"], total_steps, warmup)
                    # Accuracy of the batch as the step sees it (before the update), like Keras.
                    loss, probs = session.train_features_step(feats, y, lr, with_probabilities=True)
                    pred = np.argmax(probs, axis=1)
                    if not math.isfinite(loss):
                        raise Diverged(f"loss became {loss} at epoch {epoch + 1}, step {b + 1} "
                                       f"(learning rate {lr:.3g})")
                    loss_sum += loss * len(idx)
                    correct += int((pred == y).sum())
                    seen += len(idx)
                state["global_step"] += 1
                state["position"] = b + 1
                train_seconds = t_seconds0 + time.monotonic() - t_start
                state["partial"] = dict(loss_sum=loss_sum, correct=correct, seen=seen,
                                        train_seconds=train_seconds, skipped=sorted(epoch_skipped))
                bar.update(b + 1, loss=loss_sum / max(seen, 1), acc=correct / max(seen, 1),
                           **{"img/s": seen / max(train_seconds, 1e-9)})
    if not seen and start < steps_per_epoch:
        raise TrainError(f"none of the {n} training images could be read — check the files")
    # Validation.
    t_val = time.monotonic()
    if val_cache is not None:
        keep = np.flatnonzero(val_cache.valid)
        probs = session.predict_features(val_cache.get(0, keep))
        val = metrics(probs, np.asarray([val_samples[i][1] for i in keep], np.int64), labels)
    elif val_samples:
        probs, ys = predict_samples(session, val_samples, pool, skipped=skipped, stop=stop)
        val = metrics(probs, ys, labels)
    else:
        val = {"accuracy": None, "loss": None}
    val_seconds = time.monotonic() - t_val
    entry = {
        "epoch": epoch + 1,
        "loss": loss_sum / max(seen, 1),
        "train_accuracy": correct / max(seen, 1),
        "val_accuracy": val["accuracy"],
        "val_loss": val["loss"],
        "learning_rate": cosine_lr(cfg.lr, max(state["global_step"] - 1, 0), total_steps, warmup),
        "seconds": round(train_seconds + val_seconds, 3),
        "train_seconds": round(train_seconds, 3),
        "images_per_second": round(seen / max(train_seconds, 1e-9), 1),
        "images": seen,
        "skipped": len(epoch_skipped),
    }
    history["epochs"].append(entry)
    state.update(epoch=epoch + 1, position=0, rng_state=next_rng_state, partial={})
    say(f"epoch {epoch + 1}/{cfg.epochs}  loss {entry['loss']:.4f}  acc {entry['train_accuracy']:.3f}"
        + (f"  val_loss {val['loss']:.4f}  val_acc {val['accuracy']:.3f}" if val["accuracy"] is not None else "")
        + f"  {entry['seconds']:.1f} s  {entry['images_per_second']:.0f} img/s"
        + (f"  skipped {entry['skipped']}" if entry["skipped"] else ""))

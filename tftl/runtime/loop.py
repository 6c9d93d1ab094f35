"""The device training loop as a library: `Trainer.fit(samples, epochs, schedule=...)`.

    s = Session("mbv2.tflite")
    trainer = Trainer(s, seed=0)
    result = trainer.fit((images, labels), epochs=1, schedule=Schedule(5e-4, total_steps=300, offset=60))
    result.state.global_step, result.history[-1]["loss"]

Every step runs `extract` (or reads the feature cache, `tftl.runtime.features`) then
`train_features`. Reproducible and resumable: one numpy Generator, seeded by `seed`, draws
each epoch's order and augmentation; a checkpoint stores its state at the start of the
epoch in progress plus the batch position, so `Trainer.resume` (after an epoch or an
interrupt mid-epoch) continues with exactly the losses of an uninterrupted run.

`Schedule.offset` shifts the learning-rate schedule by a number of steps, so a federated
client that trains one epoch per round continues one cosine schedule across rounds
(offset = round * steps per epoch) instead of restarting its warm-up every round.

No TensorFlow here.
"""

import collections
import contextlib
import dataclasses
import math
import os
import sys
import time
from typing import Optional

import numpy as np

from tftl.runtime import checkpoint as ckpt
from tftl.runtime.checkpoint import TrainState
from tftl.runtime import config, contract, features, probe
from tftl.runtime.files import printable
from tftl.runtime.interpreter import release_memory
from tftl.runtime.metrics import metrics
from tftl.runtime.errors import Abort, Diverged, InputError, Interrupted
from tftl.runtime.progress import Progress
from tftl.runtime.schedule import cosine_lr, default_warmup

# Settings that shape the run; a resume with other values is allowed but not exact.
TRAJECTORY_SETTINGS = ("epochs", "lr", "warmup_steps", "augment", "cache_features", "cache_views", "seed",
                       "train_images", "schedule_offset", "head_init")


def default_epochs(train_images, batch, recipe=contract.LEGACY_RECIPE) -> int:
    """The recipe's epochs for a training set: max(recipe.epochs, ceil(recipe.min_steps / steps per epoch)).

    min_steps gives a small training set more epochs, so that a run takes enough optimizer steps
    (the legacy recipe's 500 were the 10 epochs of flowers5's 400 photos at batch 8). The cost is
    bounded by steps, not epochs: with the feature cache an epoch of a small set is a few steps,
    but validation (--val) runs once per epoch, so a tiny set with a large --val folder pays for
    many validation passes; pass --epochs.
    """
    return recipe.epochs_for(train_images, batch)


@dataclasses.dataclass(frozen=True)
class Schedule:
    """Learning rate per step: linear warm-up then cosine decay to 0 over `total_steps`.

    total_steps None: offset + the steps of this fit. warmup_steps None: min(50, total / 10),
    as the Keras reference. offset: steps already taken in earlier fits (federated rounds).
    """

    lr: Optional[float] = None  # None: the trainer's recipe's (with its warm-up, unless one is given)
    total_steps: Optional[int] = None
    warmup_steps: Optional[int] = None
    offset: int = 0

    def resolved(self, steps) -> "Schedule":
        total = self.offset + steps if self.total_steps is None else self.total_steps
        warmup = default_warmup(total) if self.warmup_steps is None else self.warmup_steps
        return dataclasses.replace(self, total_steps=total, warmup_steps=warmup)

    def __call__(self, step) -> float:
        return cosine_lr(self.lr, self.offset + step, self.total_steps, self.warmup_steps)


def _when(state) -> str:
    """When a state was reached, for a message: after a whole epoch, or mid-epoch."""
    if state.position == 0 and state.epoch > 0:
        return f"after epoch {state.epoch}"
    return f"in epoch {state.epoch + 1}, step {state.position}"


@dataclasses.dataclass
class FitResult:
    state: TrainState
    settings: dict
    feature_cache: dict

    @property
    def history(self) -> list:
        return self.state.history


class _Sums:
    """Running loss/accuracy/time of the epoch in progress (saved in checkpoints as `partial`)."""

    def __init__(self, loss_sum=0.0, correct=0, seen=0, train_seconds=0.0, skipped=()):
        self.loss_sum, self.correct, self.seen = float(loss_sum), int(correct), int(seen)
        self.seconds = float(train_seconds)
        self.skipped = set(str(s) for s in skipped)

    @classmethod
    def from_partial(cls, partial):
        return cls(**{k: partial[k] for k in ("loss_sum", "correct", "seen", "train_seconds", "skipped")
                      if k in partial})

    def partial(self) -> dict:
        return dict(loss_sum=self.loss_sum, correct=self.correct, seen=self.seen,
                    train_seconds=self.seconds, skipped=sorted(self.skipped))

    def add(self, loss, probs, y):
        self.loss_sum += loss * len(y)
        self.correct += int((np.argmax(probs, axis=1) == y).sum())
        self.seen += len(y)


class _NoStop:
    def check(self):
        pass


class _Null:
    def write(self, _):
        pass

    def flush(self):
        pass

    def isatty(self):
        return False


@dataclasses.dataclass
class _Run:
    """What one fit() needs per epoch, computed once."""

    train: features.FeatureSource
    val: Optional[features.FeatureSource]
    index: np.ndarray
    steps: int
    epochs: int
    schedule: Schedule
    checkpoint: Optional[str]


class Trainer:
    """Fine-tunes a Session's trainable state on samples.

    augment: random resized crop + flip for image files (in-memory arrays are used as given).
    cache: feature cache on/off; None: on when the model has a frozen trunk.
    recipe: a contract.Recipe (None: the model's, tftl.json): the default epochs, schedule and
    cached views, and whether the head is first fitted as a linear probe (`head_init`).
    cache_views, cache_ram_mb, cache_dir: views per image (None: the recipe's); caches above the
    RAM budget go to files in cache_dir, read a batch at a time (none: always RAM).
    A federated client passes a recipe with head_init "none": a head fitted on each device's own
    photos (standardised by them) does not average into a fleet's head.
    seed: the run's randomness. threads: decode workers (None: one per CPU).
    stop: an object whose check() raises Interrupted to stop at a step boundary (the CLIs
    pass one that turns SIGINT/SIGTERM/SIGHUP into it); KeyboardInterrupt works as well.
    out, err: where epoch lines and progress go (None: stdout / stderr); quiet: nowhere.
    """

    def __init__(self, session, *, augment=True, cache=None, cache_views=None, recipe=None,
                 cache_ram_mb=config.DEFAULT_CACHE_RAM_MB, cache_dir=None, seed=0, threads=None, stop=None,
                 out=None, err=None, quiet=False):
        self.session = session
        self.recipe = recipe or session.meta.recipe
        self.augment, self.cache = augment, cache
        self.cache_views = self.recipe.cache_views if cache_views is None else cache_views
        self.cache_ram_mb, self.cache_dir, self.seed, self.threads = cache_ram_mb, cache_dir, seed, threads
        self.stop = stop or _NoStop()
        self.out = _Null() if quiet else (out or sys.stdout)
        self.err = _Null() if quiet else (err or sys.stderr)
        self.kept = None  # (epoch, position) of the last checkpoint known finite on disk
        self.resumed_from = None  # the checkpoint `resume` restored, until fit has checked its outputs
        self._probe = None  # features of one training batch: finite_state's output check

    def say(self, msg, stream=None):
        stream = self.out if stream is None else stream
        stream.write(printable(msg) + "\n")
        stream.flush()

    # --- checkpoints -------------------------------------------------------------------

    def resume(self, path) -> TrainState:
        """The TrainState of checkpoint `path`, after restoring its weights into the session.

        Raises CheckpointError (damaged, foreign, another model or label set) or SessionError.
        """
        # names and shapes checked against `restore` before any array is allocated
        arrays, state = ckpt.load_for_resume(path, shapes=self.session.state_shapes(),
                                             model_hash=self.session.model_hash, labels=self.session.labels)
        self.session.restore_state(arrays, what=f"checkpoint {path}")
        self.kept = (state.epoch, state.position)
        self.resumed_from = os.fspath(path)
        self.say(f"resumed from {path}: epoch {state.epoch}" + (f", step {state.position}" if state.position else "")
                 + f", global step {state.global_step}" + ("" if state.rng_state is not None else
                                                           " (no RNG state saved: re-seeded from --seed and epoch)"),
                 self.err)
        return state

    def finite_state(self, state, groups=contract.GROUPS):
        """The session's state in `groups` as (name, array) pairs, one array copied at a time
        (Session.iter_state); Diverged if the model's outputs on a batch of the training set
        are NaN or infinite (weights can be finite yet so large, 1e30 after a step at --lr
        1e30, that every prediction is NaN), or, while the pairs are read, if an array is.
        A writer of the pairs (atomic) then leaves nothing: nothing is written from such a state."""
        if not self._outputs_finite():
            raise Diverged(f"the model's outputs became NaN or infinite {_when(state)} (its weights grew too large)")
        for name, value in self.session.iter_state(groups):
            if not np.isfinite(value).all():
                raise Diverged(f"the weights became NaN or infinite ({name}) {_when(state)}")
            yield name, value

    def _outputs_finite(self) -> bool:
        """Whether `infer_features` on the probe batch (the first training batch's features,
        taken once per fit: the frozen trunk never changes them) gives finite probabilities."""
        if self._probe is None:
            return True
        return bool(np.isfinite(self.session.predict_features(self._probe)).all())

    def _take_probe(self, run) -> None:
        self._probe = None
        if contract.INFER_FEATURES not in self.session.signatures:
            return
        gen = run.train.batches(run.index[:self.session.batch], self.session.batch)
        with contextlib.closing(gen):
            for idx, feats, _ in gen:
                if len(idx):
                    self._probe = np.array(feats)
                    return

    def save(self, path, state) -> None:
        """Write a checkpoint, refusing (Diverged) a state that is not finite: the last good
        checkpoint on disk stays the one to resume from."""
        pairs = self.finite_state(state)
        if path is None:
            collections.deque(pairs, maxlen=0)  # still checked: a diverged run stops here too
            return
        with ckpt.checkpoint_writer(path, state.to_meta(self.session.model_hash, self.session.labels)) as add:
            for name, value in pairs:
                add(name, value)
        self.kept = (state.epoch, state.position)

    # --- fit ---------------------------------------------------------------------------

    def fit(self, samples, epochs=1, *, val=None, schedule=None, state=None, checkpoint=None,
            on_epoch_end=None, settings=None) -> FitResult:
        """Train until `state.epoch == epochs`; returns the state, history and cache info.

        epochs None: the recipe's (`default_epochs`) for the readable training images.

        samples, val: (images, labels) arrays, [(path, label)], an ImageFolder or a folder
        (classes named after the session's labels). schedule: a Schedule (default: the
        recipe's learning rate and warm-up). state: a TrainState to continue (from `resume`), else a fresh one.
        checkpoint: a path written after every epoch and on interrupt. on_epoch_end(result)
        runs after each epoch's checkpoint. settings: extra entries recorded with the run.

        Raises InputError, Diverged (NaN/inf loss or weights), Interrupted (checkpoint saved).
        """
        state = state or TrainState()
        self._started = False
        pool = features.pool_for(self.threads)
        try:
            run, result = self._prepare(samples, val, epochs, schedule, state, checkpoint, settings, pool)
            self._take_probe(run)
            if (self.recipe.head_init == "probe" and state.global_step == 0 and state.position == 0
                    and run.schedule.offset == 0):  # a run's start, not a later federated round
                self._fit_head(run, state)
            # the caches are built and the head is in: the file's bytes are read again only for
            # the output (or the next round's cache), so they are not held through training
            self.session.release_model_bytes()
            resumed, self.resumed_from = self.resumed_from, None
            if resumed is not None and not self._outputs_finite():
                raise ckpt.CheckpointError(
                    f"checkpoint {resumed} gives NaN or infinite outputs (its weights diverged) — "
                    "pass --overwrite to start over")
            while state.epoch < run.epochs:
                self._epoch(run, state)
                self.save(checkpoint, state)
                if on_epoch_end is not None:
                    on_epoch_end(result)
            return result
        except Abort:
            raise
        except (Interrupted, KeyboardInterrupt) as e:
            raise self._interrupted(e, state, checkpoint) from None
        except Diverged as e:
            lr = self._schedule(schedule).lr
            if checkpoint and self.kept and os.path.exists(checkpoint):
                raise Diverged(f"{e}; the last good checkpoint (epoch {self.kept[0]}) is kept in {checkpoint} — "
                               f"continue from it with --resume and a lower --lr (now {lr:g})") from None
            raise Diverged(f"{e}; no checkpoint was written — lower the learning rate (--lr, now {lr:g}) and "
                           "train again") from None
        finally:
            pool.shutdown(wait=True)

    def _interrupted(self, e, state, checkpoint):
        if isinstance(e, Interrupted) and e.args:
            return e
        if not self._started:  # still building the cache: nothing new to save
            self.say("interrupted before training started — nothing to save", self.err)
            return Interrupted()
        if checkpoint is None:
            return Interrupted()
        self.save(checkpoint, state)
        self.say(f"interrupted: checkpoint saved to {checkpoint} (epoch {state.epoch}, step {state.position}) "
                 "— continue with --resume", self.err)
        return Interrupted(checkpoint)

    def _prepare(self, samples, val, epochs, schedule, state, checkpoint, settings, pool):
        s = self.session
        labels = s.labels
        train = features.as_samples(samples, labels, "training images")
        val = None if val is None else features.as_samples(val, labels, "validation images")
        for what, smp in (("training samples", train), ("validation samples", val)):
            if smp is not None:
                smp.check_labels(len(labels), what)
        if not len(train):
            raise InputError("no training samples — pass at least one image")
        src, val_src = features.open_sources(
            s, train, val, pool, cache=self.cache, views=self.cache_views, augment=self.augment, seed=self.seed,
            cache_dir=self.cache_dir, ram_mb=self.cache_ram_mb, stop=self.stop, err=self.err)
        for source in (src, val_src):
            for name, reason in (source.skipped.items() if source else ()):
                state.skipped.setdefault(name, reason)
        index = np.flatnonzero(src.valid)
        if not len(index):
            raise InputError(f"none of the {len(train)} training images could be read — check the files")
        steps = math.ceil(len(index) / s.batch)
        epochs = default_epochs(len(index), s.batch, self.recipe) if epochs is None else epochs
        schedule = self._schedule(schedule).resolved(steps * epochs)
        if src.info.get("enabled"):
            self.say(f"feature cache: {src.info['views']} view(s) x {len(index)} images, "
                     f"{src.info['bytes'] / 2**20:.1f} MiB ({src.info['storage']}), {src.info['seconds']:.1f} s",
                     self.err)
        new = dict(epochs=epochs, lr=schedule.lr, warmup_steps=schedule.warmup_steps, augment=self.augment,
                   cache_features=bool(src.info.get("enabled")), cache_views=src.info.get("views", 1),
                   seed=self.seed, train_images=len(index), batch=s.batch, val_images=len(val or ()),
                   head_init=self.recipe.head_init,
                   schedule_offset=schedule.offset, total_steps=schedule.total_steps, **(settings or {}))
        self._warn_changed(state.settings, new)
        state.settings = new
        state.position = min(state.position, steps)  # == steps: only validation left
        run = _Run(src, val_src, index, steps, epochs, schedule, checkpoint)
        self._started = True
        return run, FitResult(state, new, src.info)

    def _schedule(self, schedule) -> Schedule:
        """`schedule` (None: Schedule()) with the recipe's learning rate and warm-up where it has none."""
        schedule = schedule or Schedule()
        if schedule.lr is not None:
            return schedule
        warmup = self.recipe.warmup_steps if schedule.warmup_steps is None else schedule.warmup_steps
        return dataclasses.replace(schedule, lr=self.recipe.lr, warmup_steps=warmup)

    def _fit_head(self, run, state):
        """The LP of LP-FT: fit the classifier as a linear probe (tftl.runtime.probe) on each
        photo's mean `embed_features` over its cached views (the centre crop without a cache),
        and restore it into the session before the first step."""
        s, src, t0 = self.session, run.train, time.monotonic()
        s.require(contract.EMBED_FEATURES, purpose="fitting the head first (head_init probe; pass --head-init none)")
        views = getattr(src, "views", 1)
        with s.transient(contract.EMBED_FEATURES):  # its arena freed before restore and training
            total, used = self._embeddings(run, views)
        if total is None:
            return  # nothing readable: the epoch loop says so
        y = src.samples.labels[np.concatenate(used)]
        kernel_name, bias_name = self.recipe.classifier
        kernel, bias, info = probe.fit_head(total / views, y, len(s.labels))
        s.restore_state({kernel_name: kernel, bias_name: bias}, what="the fitted head", partial=True)
        release_memory()  # the state copies of the partial restore, before training allocates its arena
        info = dict(info, views=views, images=len(y), seconds=round(time.monotonic() - t0, 2))
        state.settings["head_fit"] = info
        self.say(f"head fitted as a linear probe on {len(y)} images x {views} view(s): l2 {info['l2']:g}, "
                 f"cv accuracy {max(info['cv_accuracy'].values()):.3f}, {info['seconds']:.1f} s", self.err)

    def _embeddings(self, run, views):
        """(sum over views of `embed_features` per photo, float64; [indices read]), or (None, [])."""
        s, src = self.session, run.train
        total, used = None, []
        for v in range(views):
            draws = np.full(len(src.samples), v) if views > 1 else None
            rows, used = [], []  # the photos read (without a cache, unreadable ones are left out)
            with contextlib.closing(src.batches(run.index, s.batch, draws=draws)) as gen:
                for idx, feats, _ in gen:
                    self.stop.check()
                    if len(idx):
                        rows.append(s.embed_features(feats)[:len(idx)])
                        used.append(idx)
            if not rows:
                return None, []
            emb = np.concatenate(rows).astype(np.float64)
            total = emb if total is None else total + emb
        return total, used

    def _warn_changed(self, old, new):
        if old is None:
            return
        changed = [f"{k} {old.get(k)!r} -> {new[k]!r}" for k in TRAJECTORY_SETTINGS
                   if k in old and old.get(k) != new[k]]
        if changed:
            self.say("warning: resuming with changed settings (" + ", ".join(changed) +
                     "): the run will not match an uninterrupted one", self.err)

    def _epoch(self, run, state):
        """One epoch from state.position: steps, then validation; appends to state.history."""
        rng = state.generator(self.seed)
        if state.rng_state is None:  # a checkpoint mid-epoch must restart this epoch's draws
            state.rng_state = rng.bit_generator.state
        perm = run.index[rng.permutation(len(run.index))]
        draws = run.train.draw(rng)
        next_rng_state = rng.bit_generator.state
        sums = _Sums.from_partial(state.partial)
        sums.skipped.update(run.train.samples.name(i) for i in np.flatnonzero(~run.train.valid))
        start = state.position
        cpu0 = time.process_time()  # all threads (decode included): the epoch's work, load-independent
        self._steps(run, state, perm, draws, sums)
        train_cpu = time.process_time() - cpu0
        if not sums.seen and start < run.steps:
            raise InputError(f"none of the {len(run.index)} training images could be read — check the files")
        t_val = time.monotonic()
        val = self._validate(run, state)
        entry = {
            "epoch": state.epoch + 1,
            "loss": sums.loss_sum / max(sums.seen, 1),
            "train_accuracy": sums.correct / max(sums.seen, 1),
            "val_accuracy": val["accuracy"],
            "val_loss": val["loss"],
            "learning_rate": run.schedule(max(state.global_step - 1, 0)),
            "seconds": round(sums.seconds + time.monotonic() - t_val, 3),
            "train_seconds": round(sums.seconds, 3),
            "train_cpu_seconds": round(train_cpu, 3),  # this process's part of the epoch only (resume)
            "images_per_second": round(sums.seen / max(sums.seconds, 1e-9), 1),
            "images": sums.seen,
            "skipped": len(sums.skipped),
        }
        state.history.append(entry)
        state.epoch, state.position, state.rng_state, state.partial = state.epoch + 1, 0, next_rng_state, {}
        self.say(f"epoch {entry['epoch']}/{run.epochs}  loss {entry['loss']:.4f}  acc {entry['train_accuracy']:.3f}"
                 + (f"  val_loss {val['loss']:.4f}  val_acc {val['accuracy']:.3f}" if val["accuracy"] is not None
                    else "")
                 + f"  {entry['seconds']:.1f} s  {entry['images_per_second']:.0f} img/s"
                 + (f"  skipped {entry['skipped']}" if entry["skipped"] else ""))

    def _steps(self, run, state, perm, draws, sums):
        s = self.session
        labels = run.train.samples.labels
        t0, seconds0 = time.monotonic(), sums.seconds
        with Progress(run.steps, desc=f"epoch {state.epoch + 1}/{run.epochs}", stream=self.err) as bar:
            bar.step = state.position
            gen = run.train.batches(perm, s.batch, state.position, draws)
            with contextlib.closing(gen):
                for b, (idx, feats, failures) in enumerate(gen, state.position):
                    self.stop.check()
                    for i, reason in failures:
                        state.skipped.setdefault(run.train.samples.name(i), reason)
                        sums.skipped.add(run.train.samples.name(i))
                    if len(idx):
                        lr = run.schedule(state.global_step)
                        y = labels[idx].astype(np.int32)
                        loss, probs = s.train_features_step(feats, y, lr, with_probabilities=True)
                        if not math.isfinite(loss):
                            raise Diverged(f"loss became {loss} at epoch {state.epoch + 1}, step {b + 1} "
                                           f"(learning rate {lr:.3g})")
                        sums.add(loss, probs, y)
                    state.global_step, state.position = state.global_step + 1, b + 1
                    sums.seconds = seconds0 + time.monotonic() - t0
                    state.partial = sums.partial()
                    bar.update(b + 1, loss=sums.loss_sum / max(sums.seen, 1), acc=sums.correct / max(sums.seen, 1),
                               **{"img/s": sums.seen / max(sums.seconds, 1e-9)})

    def _validate(self, run, state) -> dict:
        if run.val is None:
            return {"accuracy": None, "loss": None}
        s = self.session
        probs, ys = [], []
        for idx, feats, failures in run.val.batches(np.flatnonzero(run.val.valid), s.batch):
            self.stop.check()
            for i, reason in failures:
                state.skipped.setdefault(run.val.samples.name(i), reason)
            if len(idx):
                probs.append(s.predict_features(feats))
                ys.append(run.val.samples.labels[idx])
        if not probs:
            return {"accuracy": None, "loss": None}
        return metrics(np.concatenate(probs), np.concatenate(ys), s.labels)

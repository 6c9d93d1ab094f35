"""One `tftl-train` run: check every path and option, plan labels, train, write the outputs.

The training itself is `tftl.runtime.loop.Trainer` (and the feature cache
`tftl.runtime.features`); this module adds what a command-line run needs around it:

- every path checked before any work: the output is never the input model, --history and
  --plot never overwrite a model or the checkpoint, folders are folders, files are files;
- an existing checkpoint is resumed (--resume) or replaced (--overwrite), never silently
  discarded; one run at a time per checkpoint folder (a lock), and temp files left by a
  crashed write are removed;
- SIGINT, SIGTERM and SIGHUP stop at the next step and save a checkpoint (a second one
  aborts); a run whose loss or weights diverge keeps the last finite checkpoint and
  writes no output.

No TensorFlow here.
"""

import contextlib
import dataclasses
import json
import os
import sys

from tftl.runtime import contract, data, features, files, labels as labels_mod
from tftl.runtime import interpreter as rt
from tftl.runtime.config import TrainConfig
from tftl.runtime.errors import Diverged, InputError, Interrupted
from tftl.runtime.features import Samples
from tftl.runtime.checkpoint import CHECKPOINT_NAME
from tftl.runtime.loop import Trainer
from tftl.runtime.metrics import skipped_lines, skipped_report
from tftl.runtime.modelfile import StateNpz, save_model
from tftl.runtime.session import TRAIN_SIGNATURES, TRAINING, Session
from tftl.runtime.stop import StopFlag

# The run's options and what train() raises, importable from here.
__all__ = ["TrainConfig", "TrainResult", "train", "check_paths", "InputError", "Diverged", "Interrupted",
           "CHECKPOINT_NAME"]

TrainError = InputError  # the name earlier versions raised
LOCK_NAME = ".lock"  # in the checkpoint folder while a run holds it


@dataclasses.dataclass
class TrainResult:
    output: str
    checkpoint: str
    history: dict


def default_output(model_path) -> str:
    stem, _ = os.path.splitext(os.fspath(model_path))
    return f"{stem}_finetuned.tflite"


# --- signals ------------------------------------------------------------------------------


# --- paths --------------------------------------------------------------------------------


@dataclasses.dataclass
class Paths:
    output: str
    ckpt_dir: str
    checkpoint: str


def _same(a, b) -> bool:
    if os.path.exists(a) and os.path.exists(b):
        return os.path.samefile(a, b)
    return os.path.realpath(a) == os.path.realpath(b)


def _writable_file(path, flag):
    if os.path.isdir(path):
        raise InputError(f"{flag} {path} is a folder — pass a file path")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise InputError(f"folder {folder} of {flag} {path} does not exist — create it or pass another {flag}")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise InputError(f"folder {folder} of {flag} {path} is not writable — pass another {flag}")
    problem = files.create_problem(path)
    if problem is not None:
        raise InputError(f"{flag} {files.printable(path)} cannot be written ({problem}) — pass another {flag} in "
                         "a folder you can write to")


def check_paths(cfg) -> Paths:
    """Every path of the run, checked before any work. Raises InputError naming the fix."""
    output = os.fspath(cfg.output or default_output(cfg.model))
    ckpt_dir = os.fspath(cfg.checkpoint_dir or output + ".ckpt")
    checkpoint = os.path.join(ckpt_dir, CHECKPOINT_NAME)
    _writable_file(output, "--output")
    if _same(output, cfg.model):
        raise InputError(f"--output {output} is the input model — pass another --output (the input is never "
                         "overwritten)")
    if _same(ckpt_dir, output) or (os.path.exists(ckpt_dir) and not os.path.isdir(ckpt_dir)):
        raise InputError(f"--checkpoint-dir {ckpt_dir} is {'--output' if _same(ckpt_dir, output) else 'a file'} — "
                         "pass a folder of its own")
    taken = {"the input model": cfg.model, "--output": output, "the checkpoint": checkpoint}
    for flag, path in (("--history", cfg.history), ("--plot", cfg.plot)):
        if path is None:
            continue
        _writable_file(path, flag)
        clash = next((what for what, other in taken.items() if _same(path, other)), None)
        if clash:
            raise InputError(f"{flag} {path} is {clash} — pass another {flag}")
        taken[flag] = path
    for flag, path in (("images", cfg.images), ("--val", cfg.val)):
        if path is not None and os.path.exists(path) and not os.path.isdir(path):
            raise InputError(f"{flag} {path} is a file — pass a folder holding one subfolder per class")
    parent = os.path.dirname(os.path.abspath(ckpt_dir))
    if not os.path.isdir(ckpt_dir) and not (os.path.isdir(parent) and os.access(parent, os.W_OK | os.X_OK)):
        raise InputError(f"cannot create --checkpoint-dir {ckpt_dir} ({parent} is missing or not writable) — "
                         "pass another --checkpoint-dir")
    if os.path.exists(checkpoint) and not (cfg.resume or cfg.overwrite):
        raise InputError(f"{checkpoint} holds an earlier run — pass --resume to continue it, or --overwrite "
                         "to start over")
    return Paths(output, ckpt_dir, checkpoint)


@contextlib.contextmanager
def locked(paths: Paths):
    """Hold the checkpoint folder for this run (one run per folder; the .lock file is removed
    when the run ends, however it ends) and remove the temp files a killed write left there
    and next to --output (files.clean_stale_temps: only ours, only when no writer holds them)."""
    lock = os.path.join(paths.ckpt_dir, LOCK_NAME)
    try:
        os.makedirs(paths.ckpt_dir, exist_ok=True)
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as e:
        raise InputError(files.write_problem(e, lock, "pass another --checkpoint-dir")) from None
    held = False
    try:
        try:
            import fcntl
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except ImportError:  # Windows: no lock, and no cleanup that could race another run
            yield
            return
        except OSError:
            raise InputError(f"another tftl-train is using {files.printable(paths.ckpt_dir)} — wait for it, or pass "
                             "another --checkpoint-dir") from None
        # A run that ended between our open and flock removed the file we hold: not a lock.
        if os.fstat(fd).st_ino != _inode(lock):
            raise InputError(f"another tftl-train is using {files.printable(paths.ckpt_dir)} — wait for it, or "
                             "pass another --checkpoint-dir")
        held = True
        for target in (os.path.join(paths.ckpt_dir, CHECKPOINT_NAME), paths.output):
            files.clean_stale_temps(target)  # leftovers of crashed writers, never a live write
        yield
    finally:
        if held:  # removed while still held, so no other run can hold a file that is gone
            with contextlib.suppress(OSError):
                os.unlink(lock)
        os.close(fd)


def _inode(path):
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


# --- labels and samples -------------------------------------------------------------------


def _folder(root, what):
    try:
        return data.ImageFolder(root)
    except ValueError as e:
        raise InputError(f"{what}: {e}") from None


def _samples(folder, labels):
    """Samples of an ImageFolder built without labels, indexed into `labels`."""
    index = {name: i for i, name in enumerate(labels)}
    return Samples.from_paths([(path, index[folder.classes[label]]) for path, label in folder.samples])


def plan(cfg, session, err):
    """(labels, train samples, val samples or None) for the run; InputError on a mismatch."""
    folder = _folder(cfg.images, "training images")
    explicit = labels_mod.read_labels_file(cfg.labels) if cfg.labels else None
    labels, filled = labels_mod.resolve(session.labels, folder.classes, explicit=explicit,
                                        fill_placeholders=cfg.fill_placeholders, where=session.path)
    if filled:
        err.write("note: --fill-placeholders named " + ", ".join(f"output {i} {n!r}" for i, n in filled.items())
                  + " from this device's folders\n")
    if cfg.val:
        val_folder = _folder(cfg.val, "validation images")
        unknown = [c for c in val_folder.classes if c not in labels]
        if unknown:
            raise InputError(f"validation folders {unknown} are not labels of the run {labels} — rename or "
                             "remove them")
        return labels, _samples(folder, labels), _samples(val_folder, labels)
    if cfg.val_split is not None:
        train, val = folder.split(cfg.val_split, seed=cfg.seed)
        return labels, _samples(train, labels), _samples(val, labels)
    return labels, _samples(folder, labels), None


# --- the run ------------------------------------------------------------------------------


def _open(cfg) -> Session:
    # the training interpreter holds only the trained part; the trunk streams on its own
    session = Session(cfg.model, threads=cfg.threads, xnnpack=not cfg.low_memory, signatures=TRAINING)
    session.require(*TRAIN_SIGNATURES, purpose="training")
    if cfg.batch is not None and cfg.batch != session.batch:
        raise InputError(f"--batch {cfg.batch} does not match the model's fixed batch {session.batch} — drop "
                         f"--batch, or re-export the model with --batch {cfg.batch}")
    return session


def train(cfg: TrainConfig, *, out=None, err=None, on_epoch_end=None) -> TrainResult:
    """Run tftl-train. Raises InputError (bad input), Diverged, Interrupted (checkpoint saved).

    on_epoch_end(result): called after each epoch's checkpoint is written (tests use it to
    stop a run between epochs, by raising KeyboardInterrupt).
    """
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    cfg.check()
    if cfg.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise InputError("--plot needs matplotlib: pip install matplotlib (or drop --plot)") from None
    paths = check_paths(cfg)
    session = _open(cfg)
    session.labels, train_samples, val_samples = plan(cfg, session, err)
    history = {"model": os.fspath(cfg.model), "output": paths.output, "labels": session.labels, "epochs": [],
               "skipped": []}

    def epoch_done(result):
        history.update(epochs=result.history, skipped=skipped_report(result.state.skipped),
                       feature_cache=result.feature_cache, settings=result.settings)
        if cfg.history:
            _write_json(cfg.history, history)
        if on_epoch_end is not None:
            on_epoch_end(result)

    with locked(paths), StopFlag(err) as stop:
        recipe = cfg.recipe(session.meta.recipe)
        trainer = Trainer(session, augment=cfg.augment, cache=cfg.cache_features, recipe=recipe,
                          cache_ram_mb=cfg.cache_ram_mb, cache_dir=paths.ckpt_dir, seed=cfg.seed,
                          threads=cfg.threads, stop=stop, out=out, err=err)
        state = None
        if cfg.resume and os.path.exists(paths.checkpoint):
            state = trainer.resume(paths.checkpoint)
        elif cfg.resume:
            err.write(f"note: no checkpoint in {files.printable(paths.ckpt_dir)}; starting from the model's "
                      "weights\n")
        try:
            result = trainer.fit(train_samples, None, val=val_samples, state=state, checkpoint=paths.checkpoint,
                                 on_epoch_end=epoch_done, settings=dict(val=cfg.val, val_split=cfg.val_split))
        except OSError as e:  # a checkpoint or --history write: the last good checkpoint is untouched
            features.remove_cache(paths.ckpt_dir)  # on a full disk it holds the space; --resume rebuilds it
            kept = (f"; the checkpoint of epoch {trainer.kept[0]} is kept, continue with --resume"
                    if trainer.kept else "")
            flag = "--history" if cfg.history and e.filename == os.fspath(cfg.history) else "--checkpoint-dir"
            raise InputError(files.write_problem(e, fix=f"pass another {flag}") + kept) from None
        history.update(epochs=result.history, skipped=skipped_report(result.state.skipped),
                       feature_cache=result.feature_cache, settings=result.settings)
        rt.release_memory()  # the feature cache and decode buffers, before the output is assembled
        _write_outputs(cfg, session, paths, trainer, result, history, out, err)
        features.remove_cache(paths.ckpt_dir)  # kept for --resume only while the run is unfinished
    return TrainResult(paths.output, paths.checkpoint, history)


def _write_outputs(cfg, session, paths, trainer, result, history, out, err):
    """The fine-tuned model (only from finite weights), the history, the plot, the report."""
    last = result.history[-1] if result.history else {}
    summary = {"epochs": len(result.history), "learning_rate": trainer.recipe.lr, "train_images": result.settings["train_images"],
               "loss": last.get("loss"), "train_accuracy": last.get("train_accuracy"),
               "val_accuracy": last.get("val_accuracy"), "base_model": session.model_hash}
    try:
        # Diverged if the weights are not finite: no NaN model is written. The optimizer group
        # stays in the checkpoint (a deployable file has none); each array is copied out of the
        # interpreter only as it is written into the npz, so the state is never held twice.
        npz = StateNpz()
        for name, value in trainer.finite_state(result.state, contract.DEPLOYABLE):
            npz.add(name, value)
        save_model(paths.output, session.model_file, session.labels, npz.close(), {"training": summary})
    except OSError as e:
        kept = f"; the checkpoint in {files.printable(paths.ckpt_dir)} is kept, --resume writes it again"
        raise InputError(files.write_problem(e, paths.output, "pass another --output") + kept) from None
    if cfg.history:
        _write_json(cfg.history, history)
    if cfg.plot:
        plot_history(history, cfg.plot)
    for line in skipped_lines(skipped_report(result.state.skipped)):
        err.write(line + "\n")
    named = len([label for i, label in enumerate(session.labels) if not labels_mod.is_placeholder(label, i)])
    out.write(f"wrote {files.printable(paths.output)} ({named} classes"
              + (f", val accuracy {last['val_accuracy']:.3f}" if last.get("val_accuracy") is not None else "")
              + ")\n")
    out.flush()


def _write_json(path, obj):
    with files.atomic_write(path) as f:
        f.write((json.dumps(obj, indent=2, allow_nan=False) + "\n").encode("utf-8"))


def plot_history(history, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [e["epoch"] for e in history["epochs"]]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, val_key, title in ((ax1, "loss", "val_loss", "loss"),
                                    (ax2, "train_accuracy", "val_accuracy", "top-1 accuracy")):
        ax.plot(epochs, [e[key] for e in history["epochs"]], "o-", label="train")
        if any(e[val_key] is not None for e in history["epochs"]):
            ax.plot(epochs, [e[val_key] for e in history["epochs"]], "o-", label="val")
        ax.set(xlabel="epoch", ylabel=title, title=title.split()[-1])
        ax.grid(alpha=0.3)
        ax.legend()
    ax2.set_ylim(0, 1)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)

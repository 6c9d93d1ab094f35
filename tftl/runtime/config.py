"""The CLIs' options, each written once: a dataclass field that carries its argparse metadata.

`parser(TrainConfig)` builds the argument parser from the fields, and
`from_args(TrainConfig, args)` builds the config from the parsed namespace, so a flag is
defined in one place and reaches the code with no hand copy. The same dataclasses are the
Python API of the CLI runs (`tftl.runtime.run.train(TrainConfig(...))`).
"""

import argparse
import dataclasses
import math

from tftl.runtime.contract import HEAD_INITS, MAX_VIEWS, Recipe
from tftl.runtime.errors import InputError
from tftl.runtime.interpreter import MAX_THREADS

DEFAULT_CACHE_RAM_MB = 0  # tftl-train: the cache is a file in the checkpoint folder (bench/TRAINER_MEMORY.md)
RECIPE = "default: the model's recipe (tftl.json)"


def arg(default=None, help=None, *, positional=False, group=None, **kwargs):
    """A dataclass field with argparse metadata. group: mutually exclusive group name."""
    return dataclasses.field(default=default, metadata={"cli": dict(help=help, positional=positional,
                                                                    group=group, **kwargs)})


def _number(kind, lo=None, hi=None, lo_open=False, hi_open=False, what="a number"):
    """An argparse type: `kind` parsed from text and checked against lo..hi."""
    def parse(text):
        try:
            value = kind(text)
        except (TypeError, ValueError):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        bad = (kind is float and not math.isfinite(value)) or (
            lo is not None and (value <= lo if lo_open else value < lo)) or (
            hi is not None and (value >= hi if hi_open else value > hi))
        if bad:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value
    parse.__name__ = what
    return parse


positive_int = _number(int, 1, what="a positive integer")
nonnegative_int = _number(int, 0, what="an integer >= 0")
positive_float = _number(float, 0, lo_open=True, what="a positive number")
nonnegative_float = _number(float, 0, what="a number >= 0")
fraction = _number(float, 0, 1, lo_open=True, hi_open=True, what="a fraction between 0 and 1")
threads = _number(int, 1, MAX_THREADS, what=f"a thread count in 1..{MAX_THREADS}")
views = _number(int, 1, MAX_VIEWS, what=f"a view count in 1..{MAX_VIEWS}")


@dataclasses.dataclass
class ModelArgs:
    """Flags every runtime CLI takes."""

    model: str = arg(help="tftl model file (.tflite from python -m converters.export)", positional=True)
    threads: int = arg(help=f"interpreter and decode threads (1..{MAX_THREADS}; default: the runtime's choice)",
                       type=threads)


@dataclasses.dataclass
class JsonArgs:
    json: bool = arg(False, help="print one JSON object instead of text", action="store_true")


@dataclasses.dataclass
class TrainConfig(ModelArgs):
    images: str = arg(help="training images: one subfolder per class, named after the model's labels",
                      positional=True)
    val: str = arg(help="validation images (same layout)", metavar="DIR", group="val")
    val_split: float = arg(help="hold out this fraction of each class", metavar="F", type=fraction, group="val")
    epochs: int = arg(help=f"{RECIPE}: max(epochs, ceil(min_steps / steps per epoch))", type=positive_int)
    lr: float = arg(help=f"peak learning rate (linear warm-up, then cosine decay to 0); {RECIPE}",
                    type=positive_float)
    warmup_steps: int = arg(help=f"{RECIPE}, else min(50, total steps / 10)", type=nonnegative_int)
    head_init: str = arg(help=f"probe: fit the classifier on the cached views' embeddings before the first step "
                         f"(LP-FT); none: train it from the file's weights; {RECIPE}", choices=HEAD_INITS)
    batch: int = arg(help="must equal the model's fixed batch (set at export)", type=positive_int)
    augment: bool = arg(True, "random resized crop + horizontal flip (default on)",
                        action=argparse.BooleanOptionalAction)
    cache_features: bool = arg(help="run the frozen trunk once per image and reuse its features every epoch "
                               "(default: on when the model has a frozen trunk)",
                               action=argparse.BooleanOptionalAction)
    cache_views: int = arg(help="augmented views cached per image, drawn once and never regenerated (a fresh "
                           f"view costs a full trunk pass); each epoch uses one per image; {RECIPE}", type=views)
    cache_ram_mb: float = arg(DEFAULT_CACHE_RAM_MB, "larger caches go to files in the checkpoint folder, read "
                              "a batch at a time and removed when the run ends (default %(default)s: always a "
                              "file, so the cache never counts in the process's memory)", type=nonnegative_float)
    labels: str = arg(help="file with the model's labels, one per line, naming its class_i slots (use the same "
                      "file on every device)", metavar="FILE")
    fill_placeholders: bool = arg(False, "give class folders that are not labels of the model its unnamed "
                                  "class_i slots, in sorted order (only for a single device: another device's "
                                  "folders would get other slots)", action="store_true")
    checkpoint_dir: str = arg(help="default <output>.ckpt/")
    resume: bool = arg(False, "continue from the checkpoint in --checkpoint-dir", action="store_true",
                       group="start")
    overwrite: bool = arg(False, "start over, replacing the checkpoint in --checkpoint-dir", action="store_true",
                          group="start")
    output: str = arg(help="fine-tuned model (default <model>_finetuned.tflite)")
    history: str = arg(help="write per-epoch metrics here", metavar="JSON")
    plot: str = arg(help="plot loss/accuracy curves (needs matplotlib)", metavar="PNG")
    seed: int = arg(0, "default %(default)s", type=nonnegative_int)
    low_memory: bool = arg(False, "train on LiteRT's builtin kernels without XNNPACK (the trunk's feature "
                           "extraction keeps it): less memory, slower steps", action="store_true")

    def check(self) -> None:
        """Validate a config built in Python the way argparse validates flags (InputError)."""
        for f in dataclasses.fields(self):
            value, parse = getattr(self, f.name), f.metadata["cli"].get("type")
            if value is None or parse is None:
                continue
            try:
                ok = not isinstance(value, bool) and parse(str(value)) == value
            except argparse.ArgumentTypeError:
                ok = False
            if not ok:
                raise InputError(f"--{f.name.replace('_', '-')} must be {parse.__name__}, got {value!r}")
        if self.head_init not in (None, *HEAD_INITS):
            raise InputError(f"--head-init must be one of {', '.join(HEAD_INITS)}, got {self.head_init!r}")
        if self.val and self.val_split is not None:
            raise InputError("pass --val DIR or --val-split F, not both")
        if self.resume and self.overwrite:
            raise InputError("pass --resume or --overwrite, not both")

    def recipe(self, base: Recipe) -> Recipe:
        """The model's recipe `base` with this run's flags laid over it (--epochs E: exactly E)."""
        given = {k: getattr(self, k) for k in ("lr", "warmup_steps", "cache_views", "head_init")
                 if getattr(self, k) is not None}
        if self.epochs is not None:
            given.update(epochs=self.epochs, min_steps=0)
        return dataclasses.replace(base, **given)


@dataclasses.dataclass
class EvalConfig(JsonArgs, ModelArgs):
    images: str = arg(help="images: one subfolder per class, named after the model's labels", positional=True)


@dataclasses.dataclass
class PredictConfig(JsonArgs, ModelArgs):
    photos: list = arg(help="image files", positional=True, nargs="+")
    top_k: int = arg(5, "labels shown per photo (default %(default)s)", type=positive_int)


def parser(cls, prog, description, epilog=None) -> argparse.ArgumentParser:
    """An ArgumentParser with one argument per field of dataclass `cls`."""
    p = argparse.ArgumentParser(prog=prog, description=description, epilog=epilog)
    groups = {}
    for f in dataclasses.fields(cls):
        meta = dict(f.metadata["cli"])
        positional, group = meta.pop("positional"), meta.pop("group")
        if positional:
            p.add_argument(f.name, **meta)
            continue
        if group is not None and group not in groups:
            groups[group] = p.add_mutually_exclusive_group()
        target = p if group is None else groups[group]
        target.add_argument("--" + f.name.replace("_", "-"), dest=f.name, default=f.default, **meta)
    return p


def from_args(cls, args):
    """`cls` built from an argparse namespace made by parser(cls)."""
    return cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(cls)})

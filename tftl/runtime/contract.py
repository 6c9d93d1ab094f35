"""The model-file contract: what `converters.export` writes and every reader relies on.

One module, imported by the exporter (which writes it) and by the device runtime (which
parses it once), and mirrored field by field by the Java reader (`android_demo/core`) and
the browser (`web_demo/`). A tftl file is a TFLite flatbuffer followed by a ZIP holding
`tftl.json` (the `ModelMetadata` below), `labels.txt` and, for a fine-tuned model,
`state.npz`.

Format versions:
  tftl-1  `save()` had no input and returned `opt_step` as a scalar. Python's Interpreter
          runs it; Android's `Interpreter.runSignature` refuses an empty input map and
          LiteRT's CompiledModel (C, Python, LiteRT.js) cannot bind a buffer to a scalar
          READ_VARIABLE output, so those hosts refuse a tftl-1 file and ask for a re-export.
  tftl-2  `save(token f32[1])`, every state tensor rank >= 1 (`opt_step` is f32[1]),
          `restore(...) -> ok f32[1]` (1 when every restored value is finite), and the state
          names grouped in `state_groups`. `learning_rate` and `loss` were still scalars:
          the aarch64 builds of ai-edge-litert (1.4 to 2.3 at least) crash resizing a 0-d
          input (`ResizeInputTensor` clears 4n-4 bytes of dims, about 2^64 for n = 0), and
          Python's SignatureRunner resizes every input on every call, so on a 64-bit
          Raspberry Pi the first `train` step segfaults. The Python runtime runs a tftl-2
          file everywhere else and refuses its train path on such a runtime with a one-line
          re-export hint (`interpreter.scalar_inputs_crash`); Java and JavaScript never
          resize a buffer input and read tftl-2 as before.
  tftl-3  no signature tensor is a scalar: `learning_rate` is f32[1] and `loss` is f32[1]
          (`modelfile` refuses a tftl-3 file whose graph declares a 0-d tensor).

Example:
    meta = ModelMetadata.from_dict(json.loads(text), path="model.tflite")
    meta.state_groups["trainable"]      # names of the trained weights
"""

import dataclasses
import math
import re
import unicodedata

import numpy as np

from tftl.runtime.errors import InputError
from tftl.runtime.schedule import default_warmup

FORMAT = "tftl-3"
FORMATS = ("tftl-1", "tftl-2", "tftl-3")  # what the Python runtime reads
SCALAR_FREE = "tftl-3"  # the first format with no 0-d signature tensor

# Signature names, and the tensor names the hosts use.
INFER, TRAIN, EXTRACT = "infer", "train", "extract"
TRAIN_FEATURES, INFER_FEATURES = "train_features", "infer_features"
EMBED_FEATURES = "embed_features"  # features -> the classifier's input; optional (files before it lack it)
SAVE, RESTORE = "save", "restore"
# Optional (files with tftl.json `micro_batch`): the frozen trunk at the micro-batch, so a
# trainer streams images through it (a small trunk workspace) into a feature buffer and its
# training interpreter never holds the trunk at the training batch. Its tensors have names of
# their own, so readers that check `images` / `features` against `batch` read these files as before.
EXTRACT_MICRO = "extract_micro"
MICRO_IMAGES, MICRO_FEATURES = "micro_images", "micro_features"
SIGNATURES = (INFER, TRAIN, EXTRACT, TRAIN_FEATURES, INFER_FEATURES, EMBED_FEATURES, SAVE, RESTORE, EXTRACT_MICRO)
TRAIN_SIGNATURES = (TRAIN, EXTRACT, TRAIN_FEATURES, INFER_FEATURES, SAVE, RESTORE)
SAVE_INPUT = "token"          # f32[1], ignored; Android refuses an empty input map
RESTORE_OUTPUT = "ok"         # f32[1]: 1.0 when every restored value is finite
IMAGES, LABELS, SAMPLE_WEIGHT = "images", "labels", "sample_weight"
LEARNING_RATE, FEATURES = "learning_rate", "features"
LOSS, PROBABILITIES, EMBEDDING = "loss", "probabilities", "embedding"
OPT_STEP = "opt_step"

# State groups: how `save`'s tensors divide (the exporter knows; old files are grouped by name).
TRAINABLE, BN_STATISTICS, OPTIMIZER = "trainable", "bn_statistics", "optimizer"
GROUPS = (TRAINABLE, BN_STATISTICS, OPTIMIZER)
DEPLOYABLE = (TRAINABLE, BN_STATISTICS)  # what a fine-tuned model file ships (modelfile.deployable)

# Bounds on what a file may declare, so a damaged or hostile file cannot make a reader
# allocate without limit.
MAX_IMAGE_SIZE = 2048
MAX_BATCH = 1024
DEFAULT_BN_MOMENTUM = 0.99  # tftl.json `bn_momentum` when absent
BN_MEAN_SUFFIX, BN_VARIANCE_SUFFIX = "__moving_mean", "__moving_variance"  # BN statistics' state names
MAX_LABELS = 100_000
MAX_FEATURE_ELEMENTS = 1 << 26
MAX_STATE_TENSORS = 100_000
MAX_VIEWS = 64  # cached views per image (recipe and --cache-views); each costs a trunk pass and a cache row

MAX_LABEL_CHARS = 256
MAX_STATE_ELEMENTS = 1 << 28   # 1 GiB of float32 state: far above any mobile network (Java arrays end at 2 GiB)

EXPORT_HINT = "export it again with python -m converters.export"

# Characters a label may not hold: it is one line of labels.txt, a class folder name and a
# string every host (Python, Java, JavaScript) must split identically. `str.splitlines`
# also breaks at \x0b \x0c \x1c \x1d \x1e \x85 U+2028 U+2029, so those are refused
# with every other control character (Unicode category Cc), line/paragraph separators
# (Zl, Zp), lone surrogates (Cs: undecodable file-name bytes, not valid UTF-8) and the
# byte-order mark; '/' and '\\' would make the label a path.
LABEL_RULE = ("a label must be 1-256 characters of printable text on one line: no control characters, "
              "no line or paragraph separators (\\x0b \\x0c \\x1c-\\x1e \\x85 U+2028 U+2029), "
              "no '/' or backslash, no byte-order mark, no outer spaces, not '.' or '..'")
_LINE_BREAKS = frozenset("\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029")
_REFUSED_CATEGORIES = frozenset(("Cc", "Cs", "Zl", "Zp"))
_HEX64 = re.compile(r"[0-9a-f]{64}")


# The classes of refusal every reader reports for a model file (contract/rules.json
# "refusal_classes"; contract/vectors/files.json gives one per vector).
NOT_TFLITE, NOT_TFTL, DAMAGED = "not_tflite", "not_tftl", "damaged"
FORMAT_REFUSED, METADATA_REFUSED, LABELS_REFUSED, STATE_REFUSED = "format", "metadata", "labels", "state"
REFUSAL_CLASSES = (NOT_TFLITE, NOT_TFTL, DAMAGED, FORMAT_REFUSED, METADATA_REFUSED, LABELS_REFUSED, STATE_REFUSED)
FOREIGN = "foreign"  # a checkpoint of another model, other labels or another trainer
CHECKPOINT_CLASSES = (DAMAGED, FOREIGN, STATE_REFUSED)


class ContractError(InputError):
    """Metadata, labels or state that break the contract; `kind` is one of REFUSAL_CLASSES."""

    def __init__(self, message, kind=METADATA_REFUSED):
        super().__init__(message)
        self.kind = kind


def first(value) -> float:
    """The one number of a rank-0 (tftl-2 `loss`) or rank-1 [1] (tftl-3) output, as a float."""
    return float(np.asarray(value).reshape(-1)[0])


def group_of(name: str) -> str:
    """The state group of a tensor name, by the naming rule every exporter version used."""
    if name == OPT_STEP or name.startswith(("opt_m__", "opt_v__")):
        return OPTIMIZER
    if name.endswith((BN_MEAN_SUFFIX, BN_VARIANCE_SUFFIX)):
        return BN_STATISTICS
    return TRAINABLE


def group_names(names) -> dict:
    """{group: [names]} for state tensor names, in their given order."""
    groups = {g: [] for g in GROUPS}
    for n in names:
        groups[group_of(n)].append(n)
    return groups


def _int(meta, key, lo, hi, where, default=None):
    value = meta.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ContractError(f"{where}: tftl.json field {key!r} must be an integer in {lo}..{hi}, "
                            f"got {value!r} — {EXPORT_HINT}")
    return value


def _str(meta, key, where, optional=False):
    value = meta.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value:
        raise ContractError(f"{where}: tftl.json field {key!r} must be a non-empty string, "
                            f"got {value!r} — {EXPORT_HINT}")
    return value


def _names(meta, key, where):
    value = meta.get(key, [])
    if (not isinstance(value, list) or len(value) > MAX_STATE_TENSORS
            or not all(isinstance(v, str) and v for v in value)):
        raise ContractError(f"{where}: tftl.json field {key!r} must be a list of names — {EXPORT_HINT}")
    return tuple(value)


def _feature_shape(meta, image_size, where):
    fs = meta.get("feature_shape")
    if fs is None:
        return (image_size, image_size, 3)
    ok = (isinstance(fs, list) and 1 <= len(fs) <= 4
          and all(isinstance(d, int) and not isinstance(d, bool) and 1 <= d <= 1 << 20 for d in fs))
    if not ok or math.prod(fs) > MAX_FEATURE_ELEMENTS:
        raise ContractError(f"{where}: tftl.json field 'feature_shape' must be 1-4 positive integers "
                            f"(at most {MAX_FEATURE_ELEMENTS} elements), got {fs!r} — {EXPORT_HINT}")
    return tuple(fs)


def _string_map(meta, key, where):
    """An optional {str: str} field (`preprocessing`), or None when absent."""
    value = meta.get(key)
    if value is None:
        return None
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                              for k, v in value.items()):
        raise ContractError(f"{where}: tftl.json field {key!r} must map names to text — {EXPORT_HINT}")
    return dict(value)


HEAD_INITS = ("none", "probe")  # recipe `head_init`: "probe" fits the classifier on embed_features first


@dataclasses.dataclass(frozen=True)
class Recipe:
    """How to fine-tune the file (tftl.json `recipe`): every host trains with it unless told otherwise.

    lr: peak learning rate (linear warm-up, then cosine decay to 0). epochs, min_steps: a run takes
    max(epochs, ceil(min_steps / steps per epoch)) epochs. warmup_steps: None is min(50, total / 10).
    cache_views: augmented views of each photo cached through the frozen trunk. head_init "probe":
    before the first step, fit the classifier (state tensors `classifier`: kernel [D, K], bias [K])
    as a linear probe on the cached views' `embed_features` (LP-FT); "none": train it from the file.
    Files written before the key train with LEGACY_RECIPE.
    """

    lr: float = 5e-4
    epochs: int = 10
    min_steps: int = 500
    warmup_steps: object = None
    cache_views: int = 2
    head_init: str = "none"
    classifier: tuple = ()

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "classifier": list(self.classifier)}

    def epochs_for(self, images, batch) -> int:
        """max(epochs, ceil(min_steps / steps per epoch)) for a training set of `images` photos."""
        return max(self.epochs, math.ceil(self.min_steps / max(1, math.ceil(images / batch))))

    def resolved(self, images, batch) -> dict:
        """What a run on `images` photos at `batch` trains with, as every host resolves it
        (contract/vectors/probe.json "recipes"): lr, epochs, total and warm-up steps, views, head."""
        epochs = self.epochs_for(images, batch)
        total = math.ceil(images / batch) * epochs
        return {"lr": self.lr, "epochs": epochs, "total_steps": total,
                "warmup_steps": default_warmup(total) if self.warmup_steps is None else self.warmup_steps,
                "cache_views": self.cache_views, "head_init": self.head_init, "classifier": list(self.classifier)}

    @classmethod
    def from_dict(cls, raw, state_names, where) -> "Recipe":
        """Validate tftl.json `recipe` (ContractError naming the field and the fix)."""
        if not isinstance(raw, dict):
            raise ContractError(f"{where}: tftl.json field 'recipe' must be an object — {EXPORT_HINT}")
        lr = raw.get("lr", cls.lr)
        if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not 0 < lr <= 1:
            raise ContractError(f"{where}: tftl.json field 'recipe.lr' must be a number in (0, 1], got {lr!r} — "
                                f"{EXPORT_HINT}")
        head_init = raw.get("head_init", cls.head_init)
        if head_init not in HEAD_INITS:
            raise ContractError(f"{where}: tftl.json field 'recipe.head_init' must be one of {', '.join(HEAD_INITS)}, "
                                f"got {head_init!r} — {EXPORT_HINT}")
        classifier = raw.get("classifier", [])
        if (not isinstance(classifier, list) or classifier and (
                len(classifier) != 2 or not all(isinstance(c, str) and c in state_names for c in classifier)
                or classifier[0] == classifier[1])) or (head_init == "probe" and not classifier):
            raise ContractError(f"{where}: tftl.json field 'recipe.classifier' must name the classifier's kernel and "
                                f"bias (two distinct names among 'state_names'; needed by head_init 'probe') — "
                                f"{EXPORT_HINT}")
        warmup = raw.get("warmup_steps")
        return cls(lr=float(lr), epochs=_int(raw, "epochs", 1, 100_000, where + " recipe", cls.epochs),
                   min_steps=_int(raw, "min_steps", 0, 10_000_000, where + " recipe", cls.min_steps),
                   warmup_steps=None if warmup is None else _int(raw, "warmup_steps", 0, 10_000_000,
                                                                 where + " recipe"),
                   cache_views=_int(raw, "cache_views", 1, MAX_VIEWS, where + " recipe", cls.cache_views),
                   head_init=head_init, classifier=tuple(classifier))


LEGACY_RECIPE = Recipe()  # what a file without `recipe` trains with (the defaults before issue 19)


@dataclasses.dataclass(frozen=True)
class ModelMetadata:
    """The typed `tftl.json`. `raw` keeps every key as read (unknown keys are preserved)."""

    format: str
    model: str
    scheme: str
    blocks: int
    image_size: int
    batch: int
    num_labels: int
    feature_shape: tuple
    trunk_end: object
    state_names: tuple
    state_groups: dict
    content_hash: str
    trained_state: bool
    raw: dict
    preprocessing: dict = None     # {name: description}, informational; None when absent
    # The running-statistics momentum of the trained (full) BatchNorms: running = m x running +
    # (1 - m) x batch. Files written before this key used 0.99 (tftl.layers.BatchNorm's default).
    bn_momentum: float = DEFAULT_BN_MOMENTUM
    # The batch of the optional `extract_micro` signature (1..batch); None: the file has none.
    micro_batch: int = None
    recipe: Recipe = LEGACY_RECIPE

    @property
    def has_trunk(self) -> bool:
        return bool(self.trunk_end)

    @classmethod
    def from_dict(cls, meta, *, where="model file") -> "ModelMetadata":
        """Validate `tftl.json` before anything is allocated from it.

        Raises:
            ContractError: a one-line message naming `where` and the fix.
        """
        if not isinstance(meta, dict):
            raise ContractError(f"{where}: tftl.json is not a JSON object — {EXPORT_HINT}")
        fmt = meta.get("format")
        if fmt not in FORMATS:
            raise ContractError(f"{where} has model-file format {fmt!r}; this tftl reads "
                                f"{', '.join(FORMATS)} — {EXPORT_HINT} with this version", FORMAT_REFUSED)
        image_size = _int(meta, "image_size", 8, MAX_IMAGE_SIZE, where)
        names = _names(meta, "state_names", where)
        groups = meta.get("state_groups")
        if groups is None:
            groups = group_names(names)
        elif (not isinstance(groups, dict) or set(groups) != set(GROUPS)
              or sorted(sum((list(v) for v in groups.values() if isinstance(v, list)), [])) != sorted(names)):
            raise ContractError(f"{where}: tftl.json 'state_groups' must split 'state_names' into "
                                f"{', '.join(GROUPS)} — {EXPORT_HINT}")
        trunk_end = meta.get("trunk_end")
        if trunk_end is not None and not isinstance(trunk_end, str):
            raise ContractError(f"{where}: tftl.json field 'trunk_end' must be a layer name or null — {EXPORT_HINT}")
        if not isinstance(meta.get("trained_state", False), bool):
            raise ContractError(f"{where}: tftl.json field 'trained_state' must be true or false — {EXPORT_HINT}")
        content_hash = _str(meta, "content_hash", where)
        if not _HEX64.fullmatch(content_hash):
            raise ContractError(f"{where}: tftl.json field 'content_hash' must be 64 lowercase hex digits "
                                f"(sha256) — {EXPORT_HINT}")
        preprocessing = _string_map(meta, "preprocessing", where)
        bn_momentum = meta.get("bn_momentum", DEFAULT_BN_MOMENTUM)
        if isinstance(bn_momentum, bool) or not isinstance(bn_momentum, (int, float)) or not 0 <= bn_momentum < 1:
            raise ContractError(f"{where}: tftl.json field 'bn_momentum' must be a number in [0, 1), "
                                f"got {bn_momentum!r} — {EXPORT_HINT}")
        for key in ("signatures",):
            value = meta.get(key)
            if value is not None and (not isinstance(value, list)
                                      or not all(isinstance(v, str) for v in value)):
                raise ContractError(f"{where}: tftl.json field {key!r} must be a list of names — {EXPORT_HINT}")
        batch = _int(meta, "batch", 1, MAX_BATCH, where)
        micro_batch = None if meta.get("micro_batch") is None else _int(meta, "micro_batch", 1, batch, where)
        return cls(
            format=fmt, model=_str(meta, "model", where), scheme=_str(meta, "scheme", where),
            blocks=_int(meta, "blocks", 0, 1000, where, default=0), image_size=image_size,
            batch=batch, micro_batch=micro_batch,
            num_labels=_int(meta, "num_labels", 1, MAX_LABELS, where),
            feature_shape=_feature_shape(meta, image_size, where), trunk_end=trunk_end,
            state_names=names, state_groups={g: tuple(groups[g]) for g in GROUPS},
            content_hash=content_hash, trained_state=bool(meta.get("trained_state", False)),
            raw=dict(meta), preprocessing=preprocessing, bn_momentum=float(bn_momentum),
            recipe=LEGACY_RECIPE if meta.get("recipe") is None else Recipe.from_dict(meta["recipe"], names, where))


def label_problem(label) -> str:
    """What breaks LABEL_RULE in `label` (a short phrase), or "" when it is a valid label."""
    if not isinstance(label, str):
        return f"is a {type(label).__name__}, not text"
    if not label or not label.strip():
        return "is empty"
    if len(label) > MAX_LABEL_CHARS:
        return f"has {len(label)} characters"
    if label != label.strip():
        return "has outer spaces"
    if label in (".", ".."):
        return "is a path component"
    for ch in label:
        if ch in _LINE_BREAKS or ch == "\ufeff" or ch in "/\\" \
                or unicodedata.category(ch) in _REFUSED_CATEGORIES:
            return f"holds {ch!r} (U+{ord(ch):04X})"
    return ""


def check_labels(labels, *, where="labels") -> list:
    """`labels` as a list of str after LABEL_RULE and uniqueness; call before any work.

    The exporter (for --labels / class folders), tftl-train (for its class folders) and
    modelfile.write_model all call it, so a label no reader can load is refused up front.

    Raises:
        ContractError: one line naming the first bad label, the rule and the fix.
    """
    labels = list(labels)
    if not labels:
        raise ContractError(f"{where}: no labels — a model needs at least one class", LABELS_REFUSED)
    if len(labels) > MAX_LABELS:
        raise ContractError(f"{where}: {len(labels)} labels, at most {MAX_LABELS}", LABELS_REFUSED)
    for label in labels:
        problem = label_problem(label)
        if problem:
            raise ContractError(f"{where}: label {label!r} {problem}; {LABEL_RULE} — rename it", LABELS_REFUSED)
    seen = set()
    for label in labels:
        if label in seen:
            raise ContractError(f"{where}: label {label!r} appears twice — each label must be unique", LABELS_REFUSED)
        seen.add(label)
    return labels


def parse_labels(text: str, *, where="labels.txt") -> list:
    """The labels of a labels.txt text: one per line; a leading UTF-8 BOM, "\\r" line ends
    and blank lines are dropped; every label checked with check_labels.

    Lines are split at "\\n" only (not `str.splitlines`), so a stray U+2028 or \\x1c is
    reported as a bad label instead of silently making two labels.
    """
    if text.startswith("\ufeff"):
        text = text[1:]
    lines = (line[:-1] if line.endswith("\r") else line for line in text.split("\n"))
    return check_labels([line for line in lines if line.strip()], where=where)


def check_state(state: dict, shapes: dict, *, where="state", partial=False) -> dict:
    """Refuse state that does not fit the model or is not finite; returns float32 arrays.

    shapes: {name: shape} the `restore` signature declares. A tftl-1 scalar is accepted
    for a declared (1,). Used for a fine-tuned model's state.npz and a checkpoint's arrays,
    so a NaN / infinite state is refused when the file is read, not after it has run.

    Raises:
        ContractError: one line naming the first bad tensor.
    """
    missing = sorted(set(shapes) - set(state))
    extra = sorted(set(state) - set(shapes))
    if (missing and not partial) or extra:
        raise ContractError(f"{where} does not fit the model: missing {missing[:3]}"
                            f"{'...' if len(missing) > 3 else ''}, unknown {extra[:3]}"
                            f"{'...' if len(extra) > 3 else ''} — it belongs to another model", STATE_REFUSED)
    out = {}
    for name, value in state.items():
        value = np.asarray(value)
        want = tuple(shapes[name])
        if value.shape != want and not (value.shape == () and want == (1,)):
            raise ContractError(f"{where}: {name} has shape {value.shape}, the model has {want} "
                                "— it belongs to another model", STATE_REFUSED)
        if value.dtype.kind not in "biuf":
            raise ContractError(f"{where}: {name} has dtype {value.dtype}, not a number type", STATE_REFUSED)
        value = value.astype(np.float32, copy=False)
        if not np.isfinite(value).all():
            raise ContractError(f"{where} holds NaN or infinite values in {name} — "
                                "use an earlier checkpoint or train again", STATE_REFUSED)
        out[name] = value.reshape(want)
    return out

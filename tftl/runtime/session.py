"""A loaded tftl model: interpreter + metadata + signature runners, with any trained state.

    s = Session("finetuned.tflite", threads=2)
    probs = s.predict(images)          # any number of images; batches padded to the model's B

A fine-tuned model written by `tftl-train --output` is the original flatbuffer plus a
`state.npz` member in the appended ZIP (every tensor of the `save` signature). Session
restores that state on load, so `tftl-eval`, `tftl-predict` and the apps use the
fine-tuned weights with no extra step. (Baking the state into the flatbuffer's variable
initialisers would make the file usable by plain TFLite tools too: a possible later step.)

No TensorFlow here: numpy, the standard library and a TFLite runtime only.
"""

import contextlib
import os
import platform

import numpy as np

from tftl.runtime import contract
from tftl.runtime import interpreter as rt
from tftl.runtime import modelfile, subset

# What tftl-train needs from a model; `train` is the image-level step of the same graph.
TRAIN_SIGNATURES = contract.TRAIN_SIGNATURES
# What a trainer's own interpreter runs (`Session(signatures=TRAINING)`): the trunk is
# streamed on an interpreter of its own, so the training interpreter holds neither the
# trunk of `train` / `infer` nor their XNNPACK-packed weights.
TRAINING = (contract.TRAIN_FEATURES, contract.INFER_FEATURES, contract.EMBED_FEATURES, contract.SAVE, contract.RESTORE)
# Signatures that read no trained state: any interpreter of the file gives the same outputs.
_STATELESS = (contract.EXTRACT, contract.EXTRACT_MICRO)
# Signatures that read the trained state and never write it: while the session's state is still
# the file's own (`pristine`), a fresh interpreter of the file gives their outputs too.
_READERS = (contract.INFER, contract.INFER_FEATURES, contract.EMBED_FEATURES, contract.SAVE)


class SessionError(modelfile.ModelFileError):
    """A model that loads but cannot do what was asked (missing signature, bad state)."""


def _pad(array: np.ndarray, batch: int) -> np.ndarray:
    """`array` with its first axis filled up to `batch` by repeating the last row."""
    n = len(array)
    if n == batch:
        return array
    return np.concatenate([array, np.repeat(array[-1:], batch - n, axis=0)])


class Session:
    """A tftl model ready to run: `predict`, `extract`, `train_step`, `state`, `restore_state`.

    model: a path or a modelfile.ModelFile. threads: interpreter CPU threads (None: the
    runtime decides). restore_embedded: restore a fine-tuned model's state.npz (default).
    xnnpack: False runs this session's own signatures on builtin kernels only (less
    memory, slower; see interpreter.load_interpreter); `transient` interpreters (the
    feature cache's `extract`) keep XNNPACK, since their memory is freed after use.
    signatures: build the interpreter from these signatures only (`subset.signatures_only`,
    where the runtime ships the flatbuffer schema; e.g. TRAINING): the others are refused,
    except the stateless trunk, which runs on an interpreter of its own.
    Raises modelfile.ModelFileError (a ValueError) with a one-line fix for bad files.
    """

    def __init__(self, model, *, threads=None, restore_embedded=True, xnnpack=True, signatures=None):
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int)
                                    or not 1 <= threads <= rt.MAX_THREADS):
            raise SessionError(f"threads must be an integer in 1..{rt.MAX_THREADS}, got {threads!r}")
        self.threads = threads
        if isinstance(model, modelfile.ModelFile):
            embedded, raw = modelfile.read_state(model) if model.path and os.path.isfile(model.path) else (None, None)
        else:  # the file is read once: graph, metadata, labels and state.npz
            model, embedded, raw = modelfile.read_model_and_state(model)
        self.model_file = mf = model
        meta = mf.metadata
        self.path = mf.path
        self.metadata = meta
        self.labels = list(mf.labels)
        self.meta = mf.meta or contract.ModelMetadata.from_dict(meta, where=f"model file {mf.path}")
        self.batch = self.meta.batch
        self.image_size = self.meta.image_size
        self.feature_shape = self.meta.feature_shape
        self.has_trunk = self.meta.has_trunk
        self._wanted, self._xnnpack = signatures, xnnpack
        self._loaded = {}  # {"main"/"side": the bytes that interpreter runs on}
        partial = embedded is not None and len(embedded) < len(self.meta.state_names)
        baked = (self._baked(self._checked(embedded, f"{modelfile.STATE_NAME} of {mf.path}", partial))
                 if embedded is not None and restore_embedded else None)
        self._load(baked)
        self.signatures = frozenset(mf.signatures) if mf.signatures and signatures else self.resident
        # `extract` streams at the micro-batch where the file has `extract_micro` (tftl.json
        # micro_batch): the trunk's workspace is that of M images, not of the training batch
        self.micro_batch = (self.meta.micro_batch if self.meta.micro_batch is not None
                            and contract.EXTRACT_MICRO in self.signatures else None)
        self.extract_signature = contract.EXTRACT if self.micro_batch is None else contract.EXTRACT_MICRO
        self._runners = {}
        self._rate_shapes = {}
        # the state is the file's graph's own (no runner that writes it yet, no state.npz loaded;
        # False before the restore below too, so restore_state does not try baking again)
        self.pristine = embedded is None or not restore_embedded
        self.has_embedded_state = embedded is not None  # the arrays are not kept: no hidden copy
        # The flatbuffer's content: what `extract` depends on (it runs only frozen weights), so
        # a fine-tuned file shares its feature cache with the file it was trained from.
        self.trunk_hash = meta.get("content_hash") or modelfile.content_hash(modelfile.flatbuffer_of(mf))
        # The identity checkpoints are tied to: the graph, plus the trained state it starts from.
        self.model_hash = modelfile.model_hash(mf, raw)
        if embedded is not None and restore_embedded and baked is None:
            # A deployable file holds no optimizer state: the interpreter keeps its own (fresh).
            self.restore_state(embedded, what=f"{modelfile.STATE_NAME} of {mf.path}", partial=partial)
        del embedded, baked

    def _load(self, flatbuffer=None) -> None:
        """(Re)build the main interpreter from `flatbuffer` (default: the wanted signatures)."""
        mf = self.model_file
        try:
            flatbuffer = self._flatbuffer_for(self._wanted) if flatbuffer is None else flatbuffer
            self.interpreter = rt.load_interpreter(flatbuffer, self.threads, xnnpack=self._xnnpack)
            self._loaded["main"] = flatbuffer  # the interpreter runs on these bytes
            self.resident = frozenset(self.interpreter.get_signature_list())
        except rt.RuntimeNotFound:
            raise
        except (ValueError, RuntimeError) as e:
            raise modelfile.ModelFileError(
                f"{mf.path}: the TFLite runtime cannot load it ({str(e).splitlines()[0] if str(e) else e}) — export it again"
            ) from e

    def _baked(self, state):
        """The wanted signatures' flatbuffer with `state` as its variables' initial values
        (subset's `initial`), so it need not go through `restore`; None where that cannot be
        done: a runtime without the schema, a file that does not name its state, a graph whose
        initialiser does not assign a variable of `state` (then `restore` runs)."""
        if not (self.model_file.signatures and self.model_file.state_shapes() is not None and subset.available()):
            return None
        try:
            return self._flatbuffer_for(self._wanted, state)
        except ValueError:
            return None

    # --- signatures --------------------------------------------------------------------

    def require(self, *names, purpose="this") -> None:
        """SessionError naming the signatures this model lacks among `names`."""
        missing = [n for n in names if n not in self.signatures]
        if missing:
            have = ", ".join(sorted(self.signatures)) or "none"
            raise SessionError(
                f"{self.path} has no {', '.join(missing)} signature{'s' if len(missing) > 1 else ''} "
                f"(it has: {have}), so it cannot be used for {purpose} — export a trainable model with "
                "python -m converters.export"
            )
        if rt.scalar_inputs_crash():
            self._refuse_scalar_inputs(names)

    def _refuse_scalar_inputs(self, names) -> None:
        """SessionError, before any work, for a signature among `names` with a 0-d input: this
        runtime would crash on it (interpreter.scalar_inputs_crash; tftl-1/-2 files have them)."""
        sigs = self.model_file.signatures or {}
        for name in names:
            scalar = modelfile.scalar_tensor(sigs.get(name, {}).get("inputs", {}))
            if scalar is not None:
                raise SessionError(
                    f"{self.path} is a {self.meta.format} file whose {name} signature takes a scalar "
                    f"{scalar}, which crashes ai-edge-litert on this {platform.machine()} machine — "
                    f"{contract.EXPORT_HINT} (format {contract.FORMAT}), or pip install tflite-runtime "
                    "and set TFTL_RUNTIME=tflite_runtime")

    def _flatbuffer_for(self, names, initial=None):
        """The model's flatbuffer, or only signatures `names` of it where the runtime can cut it,
        with `initial` baked into its variables (only where _baked allows)."""
        have = self.model_file.signatures
        if (names is None and not initial) or not have or not subset.available():
            return modelfile.flatbuffer_of(self.model_file)
        keep = None if names is None else [n for n in names if n in have]
        cut = subset.signatures_only(modelfile.flatbuffer_of(self.model_file), keep, initial=initial)
        rt.release_memory()  # the parse's Python objects
        return cut

    def release_model_bytes(self) -> bool:
        """Drop the file's flatbuffer bytes where no interpreter runs on them (each holds its own
        cut): a trainer calls this once its caches are built and its head is in, and whatever
        needs them later (the output, another cache) reads them again, checked against the
        content hash. Returns whether they were released (not where an interpreter runs on them)."""
        file_bytes = self.model_file.flatbuffer
        if any(b is file_bytes for b in self._loaded.values()):
            return False
        self.model_file = self.model_file.released()
        del file_bytes
        rt.release_memory()
        return True

    def runner(self, name: str):
        if name not in _STATELESS and name not in _READERS:
            self.pristine = False  # it may write the state from now on
        if name not in self._runners:
            self.require(name, purpose=f"the {name} step")
            if name not in self.resident and name not in _STATELESS:
                raise SessionError(f"{self.path}: this session runs only {', '.join(sorted(self.resident))}, not "
                                   f"{name} — open a Session without signatures= for it")
            if name not in self.resident:  # the trunk, on an interpreter of its own
                self._loaded["side"] = self._flatbuffer_for([name])
                self._side = rt.load_interpreter(self._loaded["side"], self.threads)
            interp = self.interpreter if name in self.resident else self._side
            self._runners[name] = interp.get_signature_runner(name)
        return self._runners[name]

    def _rate(self, name, learning_rate):
        """The learning rate shaped as signature `name` declares it: f32[1], or f32[] in tftl-2."""
        if name not in self._rate_shapes:
            shape = self.runner(name).get_input_details()[contract.LEARNING_RATE]["shape"]
            self._rate_shapes[name] = tuple(int(d) for d in shape)
        return np.full(self._rate_shapes[name], learning_rate, np.float32)

    @contextlib.contextmanager
    def transient(self, *names):
        """Run signatures `names` on a second interpreter, deleted (and its memory returned
        to the OS) when the block ends.

        LiteRT keeps every invoked subgraph's arena, and XNNPACK's packed weights, for the
        interpreter's lifetime. The feature cache runs `extract` once per image and never
        again, so running it here keeps its memory out of the training phase that follows
        (mbv3_small MobileTL-3, 224 px, batch 8: about 46 MB). Only for signatures that read
        no trained state (`extract` runs the frozen trunk), or that only read it while the
        session's state is still the file's own (`embed_features` for the head's linear probe,
        before the first step: the new interpreter's variables start from the same values), so
        both interpreters give the same outputs. The others, and a signature already resident
        in the main interpreter, stay there.
        """
        fresh = [n for n in names
                 if n not in self._runners and (n in _STATELESS or (self.pristine and n in _READERS))]
        if not fresh:
            yield
            return
        self.require(*fresh, purpose="the feature cache")
        interp = rt.load_interpreter(self._flatbuffer_for(fresh), self.threads)
        try:
            for name in fresh:
                self._runners[name] = interp.get_signature_runner(name)
            yield
        finally:
            for name in fresh:
                self._runners.pop(name, None)
            del interp
            rt.release_memory()

    def _batched(self, name, key, inputs, out_key, batch=None):
        """Run signature `name` on any number of rows, `batch` (default: the model's) at a
        time, padding the last one."""
        inputs = np.asarray(inputs, dtype=np.float32)
        batch = batch or self.batch
        n = len(inputs)
        outs = []
        run = self.runner(name)
        for start in range(0, n, batch):
            chunk = inputs[start:start + batch]
            out = run(**{key: _pad(chunk, batch)})[out_key]
            outs.append(np.array(out[: len(chunk)]))
        if not outs:
            return np.zeros((0,), np.float32)
        return np.concatenate(outs)

    def predict(self, images) -> np.ndarray:
        """Class probabilities [N, K] for images [N, R, R, 3] (float 0..255)."""
        return self._batched("infer", "images", images, "probabilities")

    def extract(self, images) -> np.ndarray:
        """Frozen-trunk features [N, *feature_shape] for images [N, R, R, 3], streamed through
        `extract_micro` at the micro-batch where the file has it, else `extract` at the batch."""
        if self.micro_batch is not None:
            return self._batched(contract.EXTRACT_MICRO, contract.MICRO_IMAGES, images, contract.MICRO_FEATURES,
                                 self.micro_batch)
        return self._batched(contract.EXTRACT, contract.IMAGES, images, contract.FEATURES)

    def predict_features(self, features) -> np.ndarray:
        """Class probabilities [N, K] from trunk features [N, *feature_shape]."""
        return self._batched("infer_features", "features", features, "probabilities")

    def embed_features(self, features) -> np.ndarray:
        """The classifier's input [N, D] (pooled features) from trunk features."""
        return self._batched(contract.EMBED_FEATURES, contract.FEATURES, features, contract.EMBEDDING)

    def train_step(self, images, labels, learning_rate) -> float:
        """One step of the `train` signature on exactly `batch` images; returns the loss."""
        images = np.asarray(images, np.float32)
        if len(images) != self.batch:
            raise ValueError(f"train_step needs exactly {self.batch} images (the model's batch), got {len(images)}")
        out = self.runner("train")(images=images, labels=np.asarray(labels, np.int32),
                                   learning_rate=self._rate("train", learning_rate))
        return contract.first(out["loss"])

    def train_features_step(self, features, labels, learning_rate, sample_weight=None,
                            with_probabilities=False):
        """One step on up to `batch` feature rows (padded with weight 0); returns the loss.

        with_probabilities: return (loss, probabilities [n, K] of the step's forward pass,
        before the update), which saves a separate predict_features call.
        """
        features = np.asarray(features, np.float32)
        n = len(features)
        if not 0 < n <= self.batch:
            raise ValueError(f"train_features_step needs 1..{self.batch} rows, got {n}")
        weights = np.ones(n, np.float32) if sample_weight is None else np.asarray(sample_weight, np.float32)
        weights = np.concatenate([weights, np.zeros(self.batch - n, np.float32)])
        out = self.runner("train_features")(
            features=_pad(features, self.batch),
            labels=_pad(np.asarray(labels, np.int32), self.batch),
            sample_weight=weights,
            learning_rate=self._rate("train_features", learning_rate),
        )
        loss = contract.first(out["loss"])
        if not with_probabilities:
            return loss
        if "probabilities" in out:
            return loss, np.array(out["probabilities"][:n])
        return loss, self.predict_features(features)  # files exported before train_features returned probabilities

    # --- state -------------------------------------------------------------------------

    def state(self, groups=contract.GROUPS) -> dict:
        """The trainable state as named float32 arrays (copies), limited to `groups`
        (contract.TRAINABLE, BN_STATISTICS, OPTIMIZER; all by default)."""
        return dict(self.iter_state(groups))

    def iter_state(self, groups=contract.GROUPS):
        """(name, float32 array) of the state in `groups`, sorted by name, each copied out of the
        `save` signature only when asked for: a writer that drops each array once written holds
        one tensor of the state at a time, not a copy of all of it (mbv2 MobileTL-3: 18 MB).
        Run no other signature of this session until the pairs are consumed."""
        wanted = sorted({n for g in groups for n in self.meta.state_groups[g]})
        save = self.runner(contract.SAVE)
        # tftl-1 files have no save input; tftl-2 files take contract.SAVE_INPUT (ignored).
        inputs = {k: np.zeros(1, np.float32) for k in save.get_input_details()}
        parts = [getattr(save, a, None) for a in ("_interpreter_wrapper", "_subgraph_index", "_inputs", "_outputs")]
        if any(p is None for p in parts):  # a runtime whose runner lacks them: all outputs at once
            out = save(**inputs)
            yield from ((name, out.pop(name)) for name in wanted)
            return
        # SignatureRunner.__call__ without its copy of every output (the same calls, in order)
        wrapper, sub, by_input, outputs = parts
        for name, value in inputs.items():
            wrapper.ResizeInputTensor(by_input[name], np.array(value.shape, np.int32), False, sub)
        wrapper.AllocateTensors(sub)
        for name, value in inputs.items():
            wrapper.SetTensor(by_input[name], value, sub)
        wrapper.Invoke(sub)
        index = dict(outputs)
        for name in wanted:
            yield name, wrapper.GetTensor(index[name], sub)

    def state_shapes(self) -> dict:
        """{state name: shape} as the `restore` signature declares them (no state is copied)."""
        shapes = self.model_file.state_shapes()
        if shapes is not None:  # from the flatbuffer: no restore runner, whose arena is the state again
            return {name: tuple(int(d) for d in shape) for name, shape in shapes.items()}
        details = self.runner(contract.RESTORE).get_input_details()
        return {name: tuple(int(d) for d in detail["shape"]) for name, detail in details.items()}

    def restore_state(self, state: dict, *, what="state", partial=False) -> None:
        """Load tensors from `state()` / a checkpoint; SessionError if they do not fit the model.

        partial: only the names in `state` are replaced; the others keep their current
        values (for example weights only, optimizer reset: pass the trainable group and
        restore the optimizer from a fresh model's state). `contract.check_state` checks the
        names, shapes (against the `restore` signature), number types and finiteness, the
        same check every reader of state applies; a scalar `opt_step` from a tftl-1
        checkpoint is accepted as [1].
        """
        checked = self._checked(state, what, partial)
        baked = self._baked(checked) if self.pristine else None
        if baked is not None:
            # Still the file's own state: a new interpreter whose variables start from `checked`
            # (the others from the file, as a partial restore keeps them); `restore` never runs.
            self._runners = {n: r for n, r in self._runners.items() if n not in self.resident}
            self.interpreter = None
            rt.release_memory()
            self._load(baked)
            self.pristine = False
            return
        shapes = self.state_shapes()
        missing = [name for name in shapes if name not in checked]
        # The restore signature takes every tensor, so a partial restore reads the current
        # values of the missing groups only (one `save` run; nothing else is copied).
        current = self.state(self._groups_of(missing)) if missing else {}
        values = {name: checked[name] if name in checked else current[name] for name in shapes}
        self.runner(contract.RESTORE)(**values)

    def _checked(self, state, what, partial) -> dict:
        """`state` checked against the model's state (contract.check_state); SessionError if not."""
        try:
            return contract.check_state(state, self.state_shapes(), where=f"{what} for {self.path}", partial=partial)
        except contract.ContractError as e:
            raise SessionError(str(e)) from None

    def _groups_of(self, names) -> tuple:
        names = set(names)
        return tuple(g for g in contract.GROUPS if names & set(self.meta.state_groups[g]))

    def reset_optimizer(self) -> None:
        """Zero the optimizer's slots and step count, keeping weights and BN statistics.

        What a federated client does after receiving averaged weights: Adam's moments
        belong to the weights they were accumulated on. Every exported file starts its
        optimizer state at zero (Adam m, v and opt_step; SGD has none), so zero is "fresh".
        """
        shapes = self.state_shapes()
        names = self.meta.state_groups[contract.OPTIMIZER]
        if names:
            self.restore_state({n: np.zeros(shapes[n], np.float32) for n in names}, what="optimizer reset",
                               partial=True)

"""Export a tftl model as ONE .tflite that trains on stock LiteRT (builtin ops only).

    python -m converters.export --model mbv3_small --blocks 3 --labels labels.txt
    python -m converters.export --keras my_model.keras --blocks 2 --labels labels.txt

The file holds these signatures (batch B and resolution R fixed at export):
  infer(images f32[B,R,R,3] 0..255)                    -> probabilities f32[B,K]
  train(images, labels i32[B], learning_rate f32[1])  -> loss f32[1], probabilities (pre-step)
  extract(images)                                      -> features (frozen trunk output)
  extract_micro(micro_images f32[M,R,R,3])             -> micro_features: `extract` at the
      micro-batch M (tftl.json `micro_batch`, default 1), when the model has a trunk and M < B:
      trainers stream images through it, so no trunk workspace at batch B is ever alive
  train_features(features, labels, sample_weight f32[B], learning_rate) -> loss, probabilities
  infer_features(features)                             -> probabilities
  embed_features(features)                             -> embedding f32[B,D] (the classifier's input)
  save(token f32[1])                                   -> every piece of trainable state
  restore(<the same named tensors>)                    -> ok f32[1]
No signature has a scalar input or output (contract tftl-3: aarch64 LiteRT crashes resizing a
scalar input).
State = trained weights, BN running statistics of fully trained BNs, optimizer slots and
step; names are sanitised variable paths. Frozen weights are constants, stored per-channel
int8 behind DEQUANTIZE ops (--quantize int8, converters/quantize.py). Each signature's operators
are reordered to keep fewer tensors alive at once (converters/op_order.py). tftl metadata (labels,
preprocessing, model, scheme, blocks, content hash) rides in a ZIP appended to the
flatbuffer (`tftl.runtime.modelfile`), readable on the device without TensorFlow.
"""

import argparse
import dataclasses
import logging
import os
import re
import shutil
import sys
import tempfile
import time

from converters.op_order import memory_order
from converters.quantize import fill_zero_initial_values, int8_weights
from tftl.runtime.contract import Recipe

DEFAULT_CLASSES = 10
# The training recipe every exported file carries (tftl.json `recipe`), read by every host: chosen
# on bench/accuracy's datasets, never on flowers5 (bench/accuracy/RECIPES.md has the measurements).
RECIPE = Recipe(lr=1e-4, epochs=10, min_steps=0, cache_views=8, head_init="probe")
MAX_LABELS_BYTES = 16 << 20


@dataclasses.dataclass
class ExportResult:
    """What `export` wrote."""

    path: str
    size_bytes: int
    trainable_params: int
    frozen_params: int
    signatures: dict
    metadata: dict
    memory_estimate_bytes: object = None
    labels: list = None


def sanitize(name: str) -> str:
    """Variable path -> a signature tensor name (TFLite names must not contain '/')."""
    return re.sub(r"[^0-9A-Za-z_]", "_", name)


def _state_variables(model):
    """(name, tf.Variable) of everything `train` updates besides the optimizer slots."""
    import tensorflow as tf

    from tftl import layers as tl
    out = []
    for layer in model.tftl_layers:
        for v in layer.weights:
            tv = v.value
            trains = v.trainable or (isinstance(layer, tl.BatchNorm)
                                     and layer.config.bn_mode == "full"
                                     and v.name in ("moving_mean", "moving_variance"))
            if trains:
                assert isinstance(tv, tf.Variable)
                out.append((sanitize(f"{layer.name}__{v.name}"), v, tv))
    return out


def _state_layout(state, opt):
    """(names, tensors, groups) of everything `save` returns, in contract tftl-2's order:
    trained weights and BN statistics, opt_step, then Adam's m and v slots per weight."""
    from tftl.runtime import contract

    names = [n for n, _, _ in state] + [contract.OPT_STEP]
    tensors = [tv for _, _, tv in state] + [opt.step]
    trained_names = [n for n, kv, _ in state if kv.trainable]
    groups = {contract.TRAINABLE: trained_names,
              contract.BN_STATISTICS: [n for n, kv, _ in state if not kv.trainable],
              contract.OPTIMIZER: [contract.OPT_STEP]}
    for slot, slots in (("m", opt.m), ("v", opt.v)):
        names += [f"opt_{slot}__{n}" for n in trained_names]
        groups[contract.OPTIMIZER] += [f"opt_{slot}__{n}" for n in trained_names]
        tensors += list(slots)
    return names, tensors, groups


def _state_signatures(names, tensors):
    """The `save` and `restore` tf.functions over the state tensors."""
    import tensorflow as tf

    from tftl.runtime import contract

    # Contract tftl-2 and later (tftl/runtime/contract.py): `save` takes one input, because
    # Android's Interpreter.runSignature refuses an empty input map; every state tensor has
    # rank >= 1, because a scalar READ_VARIABLE output is dynamic and LiteRT's CompiledModel
    # (C, Python, LiteRT.js) cannot bind a buffer to it; `ok` is computed, not a constant.
    as_file = [tf.TensorShape([1]) if t.shape.rank == 0 else t.shape for t in tensors]

    @tf.function(input_signature=[tf.TensorSpec([1], tf.float32, name=contract.SAVE_INPUT)])
    def save(token):
        del token  # present only for runSignature; kept as an input by the signature
        return {n: tf.reshape(t, shape) for n, t, shape in zip(names, tensors, as_file)}

    restore_specs = [tf.TensorSpec(shape, tf.float32, name=n) for n, shape in zip(names, as_file)]

    @tf.function(input_signature=restore_specs)
    def restore(*values):
        finite = [tf.reduce_all(tf.math.is_finite(v)) for v in values]
        for t, v in zip(tensors, values):
            t.assign(tf.reshape(v, t.shape))
        return {contract.RESTORE_OUTPUT: tf.reshape(tf.cast(tf.reduce_all(tf.stack(finite)), tf.float32), [1])}

    return save, restore


def _input_specs(batch, r, feat_shape):
    """TensorSpecs of images, features, labels, sample_weight and learning_rate."""
    import tensorflow as tf
    return (tf.TensorSpec([batch, r, r, 3], tf.float32, name="images"),
            tf.TensorSpec([batch, *feat_shape], tf.float32, name="features"),
            tf.TensorSpec([batch], tf.int32, name="labels"),
            tf.TensorSpec([batch], tf.float32, name="sample_weight"),
            tf.TensorSpec([1], tf.float32, name="learning_rate"))


def build_module(model, optimizer="adam", batch=8, micro_batch=None):
    """A tf.Module with the signatures above; frozen weights become constants.
    micro_batch: the batch of `extract_micro` (None or >= batch: no such signature)."""
    import keras
    import tensorflow as tf

    from tftl import models, training
    from tftl.runtime import contract

    plan = model.plan
    r = plan.image_size
    state = _state_variables(model)
    state_ids = {id(kv) for _, kv, _ in state}
    frozen = [v for v in model.weights if id(v) not in state_ids]
    frozen_map = [(v, tf.constant(v.numpy())) for v in frozen]
    trained = [tv for _, kv, tv in state if kv.trainable]
    opt = training.Optimizer(trained, optimizer)
    names, tensors, groups = _state_layout(state, opt)

    specs, trunk_index, feat_shape = plan.specs, plan.trunk_index, plan.feature_shape
    images_spec, feats_spec, labels_spec, weights_spec, lr_spec = _input_specs(
        batch, r, feat_shape)
    normalize = model.get_layer("normalize")

    def run(x, from_features, training_flag, stop=None):
        """Forward from images or trunk features, frozen weights as constants; stop: the
        number of layers to run (None: all, to the logits)."""
        start = trunk_index if from_features else 0
        with keras.StatelessScope(state_mapping=frozen_map) as scope:
            t = {specs[start - 1].name: x} if start else {"input": normalize(x)}
            out = models.run_layers(model.tftl_layers[:stop], specs[:stop], t, start, training_flag)
        updates = [(tv, scope.get_current_value(kv)) for _, kv, tv in state if not kv.trainable]
        return out, updates

    class Module(tf.Module):
        pass

    module = Module()
    module.state = tensors  # tracks the underlying tf.Variables: initialisers are emitted

    def step(x, labels, sample_weight, lr, from_features):
        lr = tf.reshape(lr, [])  # f32[1] in the file (no scalar input: contract tftl-3)
        with tf.GradientTape() as tape:
            logits, updates = run(x, from_features, True)
            loss = training.cross_entropy(logits, labels, sample_weight)
        grads = tape.gradient(loss, trained)
        for tv, new in updates:
            if new is not None:
                tv.assign(new)
        opt.apply(trained, grads, lr)
        # the step's own forward, so that training accuracy needs no second pass
        return {"loss": tf.reshape(loss, [1]), "probabilities": tf.nn.softmax(logits)}

    @tf.function(input_signature=[images_spec])
    def infer(images):
        return {"probabilities": tf.nn.softmax(run(images, False, False)[0])}

    @tf.function(input_signature=[images_spec, labels_spec, lr_spec])
    def train(images, labels, learning_rate):
        return step(images, labels, tf.ones([batch]), learning_rate, False)

    def trunk(images):
        if not trunk_index:
            return tf.identity(images)
        with keras.StatelessScope(state_mapping=frozen_map):
            t = {"input": normalize(images)}
            models.run_layers(model.tftl_layers[:trunk_index], specs[:trunk_index], t, 0, False)
        return t[specs[trunk_index - 1].name]

    @tf.function(input_signature=[images_spec])
    def extract(images):
        return {"features": trunk(images)}

    micro_spec = tf.TensorSpec([micro_batch or batch, r, r, 3], tf.float32, name=contract.MICRO_IMAGES)

    @tf.function(input_signature=[micro_spec])
    def extract_micro(micro_images):
        return {contract.MICRO_FEATURES: trunk(micro_images)}

    @tf.function(input_signature=[feats_spec, labels_spec, weights_spec, lr_spec])
    def train_features(features, labels, sample_weight, learning_rate):
        return step(features, labels, sample_weight, learning_rate, True)

    @tf.function(input_signature=[feats_spec])
    def infer_features(features):
        return {"probabilities": tf.nn.softmax(run(features, True, False)[0])}

    @tf.function(input_signature=[feats_spec])
    def embed_features(features):
        # the classifier's input: a host fits the head on it before fine-tuning (LP-FT)
        return {contract.EMBEDDING: run(features, True, False, stop=-1)[0]}

    save, restore = _state_signatures(names, tensors)
    sigs = {contract.INFER: infer, contract.TRAIN: train, contract.EXTRACT: extract,
            contract.TRAIN_FEATURES: train_features, contract.INFER_FEATURES: infer_features,
            contract.EMBED_FEATURES: embed_features, contract.SAVE: save, contract.RESTORE: restore}
    if trunk_index and micro_batch is not None and micro_batch < batch:
        sigs[contract.EXTRACT_MICRO] = extract_micro
    module.opt = opt
    return module, sigs, dict(names=names, groups=groups, feature_shape=list(feat_shape),
                              trunk_end=plan.trunk_end)


def convert(module, signatures, quantize="int8"):
    """SavedModel -> TFLite flatbuffer with TFLITE_BUILTINS only and resource variables.

    quantize="int8" stores the frozen weights int8 with `converters.quantize.int8_weights`
    (not the converter's dynamic-range mode: see that module for why).
    """
    import tensorflow as tf

    tmp = tempfile.mkdtemp(prefix="tftl_export_")
    try:
        concrete = {k: f.get_concrete_function() for k, f in signatures.items()}
        tf.saved_model.save(module, tmp, signatures=concrete)
        conv = tf.lite.TFLiteConverter.from_saved_model(tmp, signature_keys=list(signatures))
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        conv.experimental_enable_resource_variables = True
        flat, zeros = fill_zero_initial_values(conv.convert())
        logging.info("optimizer slots initialised by FILL: %.1f MB of zeros left out", zeros / 1e6)
        if quantize == "int8":
            flat, stats = int8_weights(flat)
            logging.info("int8 weights: %d tensors, %d elements; %d elements stay float32 "
                         "(vectors: BN scales/shifts, biases)", stats["quantized_tensors"],
                         stats["quantized_elements"], stats["float_elements"])
        flat, peaks = memory_order(flat)
        logging.info("operator order for memory, estimated arena peak MB: %s", ", ".join(
            f"{k} {a / 1e6:.1f} -> {b / 1e6:.1f}" for k, (a, b) in sorted(peaks.items())))
        return flat
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def to_tflite(model, *, optimizer="adam", batch=8, quantize="int8", micro_batch=None):
    """A built tftl Keras model -> (flatbuffer bytes, signatures, extra metadata)."""
    module, sigs, extra = build_module(model, optimizer, batch, micro_batch)
    return convert(module, sigs, quantize), sigs, extra


def read_labels(labels_file=None, classes=None):
    """Label names from a file (one per line, `contract.parse_labels`) or `classes` numbered slots.

    The label rule (`contract.LABEL_RULE`) is applied here, before any conversion, so a
    label no reader could load is refused in a second, not after a minute of work.
    """
    from tftl.runtime import contract
    if labels_file:
        try:
            with open(labels_file, "rb") as f:
                raw = f.read(MAX_LABELS_BYTES + 1)
            if len(raw) > MAX_LABELS_BYTES:
                raise ValueError(f"labels file {labels_file} is over {MAX_LABELS_BYTES >> 20} MiB; "
                                 "pass a text file with one label per line")
            text = raw.decode("utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise ValueError(f"cannot read labels file {labels_file}: {e.__class__.__name__}: "
                             f"{e}; pass a UTF-8 text file with one label per line") from None
        return contract.parse_labels(text, where=f"labels file {labels_file}")
    n = DEFAULT_CLASSES if classes is None else classes
    if not isinstance(n, int) or n < 2:
        raise ValueError(f"--classes must be an integer >= 2, got {n!r}")
    return [f"class_{i}" for i in range(n)]


def check_output(output) -> None:
    """Refuse an --output that cannot be written, before the conversion starts.

    Raises:
        ValueError: one line naming the path and the fix.
    """
    path = os.path.abspath(output)
    folder = os.path.dirname(path)
    if os.path.isdir(path):
        raise ValueError(f"--output {output} is a folder; pass a file path such as {os.path.join(output, 'model.tflite')}")
    if os.path.exists(path) and not os.path.isfile(path):
        raise ValueError(f"--output {output} exists and is not a regular file; pass another path")
    if not os.path.isdir(folder):
        raise ValueError(f"folder {folder} of --output {output} does not exist; create it first")
    if not os.access(folder, os.W_OK):
        raise ValueError(f"folder {folder} of --output {output} is not writable; pass another --output")
    from tftl.runtime.files import create_problem, printable

    problem = create_problem(path)  # root passes os.access on /proc or a read-only mount
    if problem is not None:
        raise ValueError(f"--output {printable(output)} cannot be written ({problem}); pass an --output in a "
                         "folder you can write to")


def export(model_name="mbv3_small", *, scheme="mobiletl", blocks=3, labels=None,
           image_size=224, batch=8, weights="imagenet", optimizer="adam", quantize="int8",
           output=None, packed_masks=False, seed=None, micro_batch=1, log=logging.info) -> ExportResult:
    """Builds, converts and writes a trainable tftl .tflite.

    Args:
        model_name: one of tftl.MODEL_NAMES.
        scheme: one of tftl.SCHEMES. blocks: IRBs trained by block-wise schemes.
        labels: label names (their count is the number of label slots).
        image_size, batch: fixed input shape of every signature.
        weights: "imagenet", None or a weights file path.
        optimizer: "adam" or "sgd". quantize: "int8" (frozen constants) or "none".
        output: path of the .tflite (written atomically).
        seed: seeds Keras' random initialisers (reproducible random-init weights).
        micro_batch: batch of the streamed `extract_micro` (1..batch; "auto": the largest
            whose predicted trunk workspace stays under the step's, `tftl.profile.micro_batch_for`).
    Returns:
        ExportResult.
    Raises:
        ValueError / FileNotFoundError: bad arguments or missing weights (one line).
    """
    from tftl.plan import ModelPlan
    from tftl.runtime import contract

    # Everything a user can get wrong is checked here, before TensorFlow is even imported.
    labels = contract.check_labels(labels or read_labels(), where="labels")
    _check_batch_quantize(batch, quantize)
    plan = ModelPlan.build(model_name, scheme=scheme, blocks=blocks, image_size=image_size,
                           num_classes=len(labels), packed_masks=packed_masks)
    output = output or f"{model_name}_{plan.label.replace('-', '')}.tflite"
    check_output(output)

    from tftl import models
    if seed is not None:
        import keras
        keras.utils.set_random_seed(seed)
    return _write(plan, lambda: models.build(plan, weights), labels, output=output, batch=batch,
                  optimizer=optimizer, quantize=quantize, micro_batch=micro_batch, log=log)


# what the model expects of the device's 0..255 RGB: (scale, offset). Words, not "-1..1":
# argparse would read a value starting with "-" as an option.
INPUT_RANGES = {"pixels": (1.0, 0.0), "unit": (1.0 / 255.0, 0.0), "symmetric": (1.0 / 127.5, -1.0)}


def from_keras(model, *, scheme="mobiletl", blocks=3, train_from=None, labels=None,
               input_range="pixels", image_size=None, batch=8, optimizer="adam",
               quantize="int8", output=None, packed_masks=False, micro_batch=1,
               log=logging.info) -> ExportResult:
    """A user's own Keras 3 model (or the path of its .keras file) -> a trainable tftl .tflite.

    The model's layers map onto tftl's (`tftl.keras_import`; README "Your own model"), with
    the user's trained weights and head; its last Dense is the classifier. Every layer is
    checked before anything is built or written.

    Args:
        model: a keras.Model (functional or Sequential) or a .keras path.
        scheme: one of tftl.SCHEMES but tinytl. blocks: residual blocks (Add merge points)
            trained by block-wise schemes, from the top. train_from: a layer name; a
            block-wise scheme trains it and everything above it (instead of `blocks`).
        labels: label names, one per output of the model (default class_0 ...).
        input_range: what the model expects of the 0..255 RGB input the device gives it:
            "pixels" (0..255: the model scales it itself, e.g. with Rescaling), "unit" (0..1)
            or "symmetric" (-1..1, MobileNetV2's preprocess_input).
        image_size: the input size, needed only when the model's input has none.
        batch, optimizer, quantize, output, packed_masks, micro_batch: as `export`.
    Raises:
        ValueError: an unsupported layer (keras_import.UnsupportedLayer: one line naming
            the layer, its class and what to do) or a bad argument.
    """
    from tftl import keras_import, models
    from tftl.plan import ModelPlan
    from tftl.runtime import contract

    if input_range not in INPUT_RANGES:
        raise ValueError(f"--input-range must be one of {', '.join(INPUT_RANGES)}, got {input_range!r}")
    _check_batch_quantize(batch, quantize)
    path = model if isinstance(model, (str, os.PathLike)) else None
    if path is not None:
        if not os.path.isfile(path):
            raise ValueError(f"--keras {path}: no such file; pass the .keras file of your model")
        model = keras_import.load(str(path))
    graph = keras_import.read(model, image_size)
    plan = ModelPlan.from_graph(graph.name, graph.specs, scheme=scheme, blocks=blocks,
                                train_from=train_from, image_size=graph.image_size,
                                packed_masks=packed_masks, normalization=INPUT_RANGES[input_range])
    labels = contract.check_labels(labels or read_labels(classes=plan.num_classes), where="labels")
    if len(labels) != plan.num_classes:
        raise ValueError(f"the model's last layer has {plan.num_classes} outputs but {len(labels)} "
                         f"labels were given; pass {plan.num_classes} labels")
    output = output or f"{graph.name}_{plan.label.replace('-', '')}.tflite"
    check_output(output)
    return _write(plan, lambda: models.build_imported(plan, graph), labels, output=output,
                  batch=batch, optimizer=optimizer, quantize=quantize, micro_batch=micro_batch, log=log)


def _check_batch_quantize(batch, quantize):
    if quantize not in ("int8", "none"):
        raise ValueError(f"--quantize must be int8 or none, got {quantize!r}")
    if not isinstance(batch, int) or isinstance(batch, bool) or batch < 1:
        raise ValueError(f"--batch must be a positive integer, got {batch!r}")


def _write(plan, build, labels, *, output, batch, optimizer, quantize, micro_batch, log):
    """Build the plan's Keras model, convert it and write the model file (atomically)."""
    from tftl import profile
    from tftl.runtime import modelfile

    estimate = profile.profile_plan(plan, batch)["peak_bytes"]
    micro_batch = profile.micro_batch_for(plan, batch) if micro_batch == "auto" else micro_batch
    if isinstance(micro_batch, bool) or not isinstance(micro_batch, int) or not 1 <= micro_batch <= batch:
        raise ValueError(f"--micro-batch must be auto or an integer in 1..{batch} (the batch), got {micro_batch!r}")
    micro_batch = micro_batch if plan.trunk_index and micro_batch < batch else None
    t0 = time.time()
    log(f"building {plan.model} ({plan.label}, {len(labels)} labels, {plan.image_size}px)")
    model = build()
    log("converting to TFLite (builtin ops only)")
    flat, sigs, extra = to_tflite(model, optimizer=optimizer, batch=batch, quantize=quantize,
                                  micro_batch=micro_batch)
    meta = _metadata(plan, model, extra, sigs, batch=batch, optimizer=optimizer,
                     quantize=quantize, estimate=estimate)
    if micro_batch is not None:
        meta["micro_batch"] = micro_batch
    modelfile.write_model(output, flat, meta, labels)
    log(f"done in {time.time() - t0:.1f}s")
    return ExportResult(output, os.path.getsize(output), meta["trainable_params"],
                        meta["frozen_params"], {k: _signature_io(v) for k, v in sigs.items()},
                        meta, estimate, list(labels))


def _metadata(plan, model, extra, sigs, *, batch, optimizer, quantize, estimate):
    """The `tftl.json` dict of the current contract (tftl/runtime/contract.py)."""
    from tftl.runtime import contract

    trainable = int(sum(v.numpy().size for v in model.trainable_weights))
    total = int(sum(v.numpy().size for v in model.weights))
    return dict(format=contract.FORMAT, model=plan.model, scheme=plan.scheme,
                blocks=plan.blocks, image_size=plan.image_size,
                batch=batch, optimizer=optimizer, quantize=quantize,
                preprocessing=dict(input="RGB float32 0..255", resize="shorter side to size, "
                                   "centre crop", normalization="inside the model"),
                feature_shape=extra["feature_shape"], trunk_end=extra["trunk_end"],
                state_names=extra["names"], state_groups=extra["groups"],
                signatures=sorted(sigs), bn_momentum=_bn_momentum(model), trainable_params=trainable,
                frozen_params=total - trainable, memory_estimate_bytes=int(estimate),
                recipe=_recipe(plan, extra["names"]))


def _recipe(plan, names):
    """RECIPE with the classifier's state names (head_init "probe" fits them first)."""
    from tftl.runtime import contract

    head = sanitize(plan.specs[-1].name) + "__"
    assert plan.specs[-1].role == "classifier", plan.specs[-1]
    classifier = [head + "kernel", head + "bias"]
    if not set(classifier) <= set(names):  # a scheme that freezes the classifier: nothing to fit
        return dataclasses.replace(RECIPE, head_init="none").to_dict()
    return dataclasses.replace(RECIPE, classifier=tuple(classifier)).to_dict()


def _bn_momentum(model) -> float:
    """The one running-statistics momentum of the model's BatchNorms (readers such as the fleet
    server need it to tell a round's batch statistics from the running average's memory)."""
    from tftl import layers as tl
    from tftl.runtime import contract

    values = {float(layer.momentum) for layer in model.tftl_layers if isinstance(layer, tl.BatchNorm)}
    if len(values) > 1:
        raise ValueError(f"the model's BatchNorms use different momenta {sorted(values)}; tftl.json holds one")
    return values.pop() if values else contract.DEFAULT_BN_MOMENTUM


def _signature_io(fn):
    cf = fn.get_concrete_function()
    ins = [f"{s.name}:{s.dtype.name}{list(s.shape)}" for s in cf.structured_input_signature[0]]
    outs = [f"{k}:{v.dtype.name}{list(v.shape)}" for k, v in cf.structured_outputs.items()]
    return dict(inputs=ins, outputs=outs)


def main(argv=None):
    from tftl import archs, schemes
    p = argparse.ArgumentParser(prog="python -m converters.export", description=__doc__.split("\n")[0])
    p.add_argument("--model", default="mbv3_small", help=f"one of {', '.join(archs.MODEL_NAMES)}")
    p.add_argument("--keras", default=None, metavar="PATH.keras",
                   help="your own trained Keras 3 model instead of --model (README: Your own model)")
    p.add_argument("--train-from", default=None, metavar="LAYER",
                   help="--keras: a block-wise scheme trains this layer and all above it")
    p.add_argument("--input-range", default="pixels", choices=tuple(INPUT_RANGES),
                   help="--keras: what the model expects of the device's 0..255 RGB: pixels (0..255, "
                        "it scales them itself), unit (0..1) or symmetric (-1..1)")
    p.add_argument("--scheme", default="mobiletl", help=f"one of {', '.join(schemes.SCHEMES)}")
    p.add_argument("--blocks", type=int, default=3, help="IRBs trained by ft_blocks / mobiletl")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--classes", type=int, default=None, help=f"label slots (default {DEFAULT_CLASSES})")
    g.add_argument("--labels", default=None, help="file with one label per line")
    p.add_argument("--image-size", type=int, default=None,
                   help="input resolution (default 224; --keras: the model's own)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--micro-batch", default="1", type=lambda v: v if v == "auto" else int(v),
                   help="batch of extract_micro, the streamed trunk (default 1; auto: by predicted memory)")
    p.add_argument("--weights", default="imagenet", help="imagenet | none | PATH")
    p.add_argument("--optimizer", default="adam", choices=("adam", "sgd"))
    p.add_argument("--quantize", default="int8", choices=("int8", "none"))
    p.add_argument("--packed-masks", action="store_true", help="bit-pack MobileTL sign masks")
    p.add_argument("--output", default=None, help="output .tflite path")
    p.add_argument("--seed", type=int, default=None, help="seed of random initialisers")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        labels = read_labels(a.labels, a.classes) if a.labels or a.classes or not a.keras else None
        if a.keras:
            r = from_keras(a.keras, scheme=a.scheme, blocks=a.blocks, train_from=a.train_from,
                           labels=labels, input_range=a.input_range, image_size=a.image_size,
                           batch=a.batch, optimizer=a.optimizer, quantize=a.quantize,
                           output=a.output, packed_masks=a.packed_masks, micro_batch=a.micro_batch)
        else:
            weights = None if a.weights == "none" else a.weights
            r = export(a.model, scheme=a.scheme, blocks=a.blocks, labels=labels,
                       image_size=a.image_size or 224, batch=a.batch, weights=weights,
                       optimizer=a.optimizer, quantize=a.quantize, output=a.output,
                       packed_masks=a.packed_masks, seed=a.seed, micro_batch=a.micro_batch)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"model        {r.metadata['model']} scheme={r.metadata['scheme']} "
          f"blocks={r.metadata['blocks']} labels={len(r.labels)}")
    print(f"parameters   trainable {r.trainable_params:,}  frozen {r.frozen_params:,}")
    print(f"file size    {r.size_bytes / 1e6:.2f} MB")
    if r.memory_estimate_bytes:
        print(f"train memory {r.memory_estimate_bytes / 1e6:.1f} MB (analytical estimate, batch {a.batch})")
    for k, v in r.signatures.items():
        print(f"signature    {k}({', '.join(v['inputs']) if len(v['inputs']) < 6 else str(len(v['inputs'])) + ' state tensors'})"
              f" -> {', '.join(v['outputs']) if len(v['outputs']) < 6 else str(len(v['outputs'])) + ' state tensors'}")
    print(f"output       {r.path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

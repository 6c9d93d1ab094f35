"""tftl models train in tflite_runtime 2.14, the fallback device runtime (TFTL_RUNTIME=tflite_runtime).

tflite-runtime 2.14 needs numpy<2, so it lives in its own virtual environment, created once
in ~/.cache/tftl/venv-tflrt-2.14 ($TFTL_TFLRT_VENV overrides) and reused while it still
imports tflite_runtime; no network (or no wheel for this Python: 2.14 has cp38..cp311)
skips. Models are exported here with TensorFlow (sys.executable) and exercised there by
tests/tflite_runtime_check.py on flowers5 photos: every signature, loss going down, save ->
restore into a fresh interpreter reproducing infer bit for bit, and the first train step and
the trunk's features matching ai_edge_litert.

The default --quantize int8 stores frozen weights int8 behind DEQUANTIZE ops
(converters.quantize) and computes in float, so both runtimes agree to float rounding. (The
converter's dynamic-range mode, used before, made per-channel FULLY_CONNECTED v12 for
MobileNetV3's squeeze-excite layers, which 2.14 refused at load, and hybrid kernels that
differ by a few percent between the two runtimes.)
"""

import json
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED = pathlib.Path(os.environ.get("TFTL_SHARED") or REPO.parent / "shared")
PHOTOS = SHARED / "data" / "flowers5" / "train"
MBV2_WEIGHTS = SHARED / "weights" / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"
CHECK = REPO / "tests" / "tflite_runtime_check.py"
TFLRT_VERSION = "2.14.0"
CACHE = pathlib.Path(os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache") / "tftl"
VENV = pathlib.Path(os.environ.get("TFTL_TFLRT_VENV") or CACHE / f"venv-tflrt-{TFLRT_VERSION.rsplit('.', 1)[0]}")
REQUIREMENTS = ["numpy<2", f"tflite-runtime=={TFLRT_VERSION}", "Pillow"]

# name -> (export arguments, parity tolerance vs ai_edge_litert: first loss, features/probabilities)
# (96 px, batch 4, the 5 flowers5 classes, last 2 blocks trained)
MODELS = {
    # ImageNet trunk, default int8: it really learns the batch.
    "mbv2_int8": (["--model", "mbv2", "--weights", str(MBV2_WEIGHTS)], (1e-4, 1e-3)),
    # Hard-swish, squeeze-excite (FULLY_CONNECTED with dequantized weights), default int8.
    "mbv3_small_int8": (["--model", "mbv3_small", "--weights", "none"], (1e-4, 1e-3)),
}

pytestmark = pytest.mark.slow


def need(path):
    if not path.exists():
        pytest.skip(f"{path} not found (set TFTL_SHARED to the shared/ folder)")
    return path


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "TFTL_RUNTIME")}
    env.update(PYTHONPATH=str(REPO), PYTHONNOUSERSITE="1", TF_CPP_MIN_LOG_LEVEL="3", **extra)
    return env


def _venv_python(venv):
    return venv / "bin" / "python"


def _venv_works(venv):
    python = _venv_python(venv)
    if not python.exists():
        return False
    probe = ("import numpy, PIL, tflite_runtime, tflite_runtime.interpreter; "
             f"assert tflite_runtime.__version__ == {TFLRT_VERSION!r}, tflite_runtime.__version__")
    return subprocess.run([str(python), "-c", probe], env=_env(), capture_output=True, timeout=120).returncode == 0


@pytest.fixture(scope="module")
def tflrt_python():
    """The python of a venv with tflite-runtime 2.14 + numpy<2 + Pillow (built once, then reused)."""
    if _venv_works(VENV):
        return _venv_python(VENV)
    VENV.parent.mkdir(parents=True, exist_ok=True)
    tmp = VENV.with_name(f"{VENV.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        # The stdlib venv of the interpreter running the tests (any CPython 3.8..3.11).
        proc = subprocess.run([sys.executable, "-m", "venv", str(tmp)], capture_output=True, text=True)
        if proc.returncode != 0:
            pytest.skip(f"cannot create a venv for tflite_runtime: {proc.stderr.strip()[-300:]}")
        proc = subprocess.run([str(_venv_python(tmp)), "-m", "pip", "install", "-q", *REQUIREMENTS],
                              env=_env(), capture_output=True, text=True, timeout=900)
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["(no output)"]
            pytest.skip(f"pip cannot install {' '.join(REQUIREMENTS)} for Python "
                        f"{sys.version_info.major}.{sys.version_info.minor} (no network, or no wheel): {tail[0]}")
        shutil.rmtree(VENV, ignore_errors=True)
        try:
            os.replace(tmp, VENV)  # a venv's python finds its site-packages relative to itself
        except OSError:
            pass  # another run installed it meanwhile; use that one
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    assert _venv_works(VENV), f"{VENV} was built but does not import tflite_runtime {TFLRT_VERSION}"
    return _venv_python(VENV)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """name -> path of the exported model, exporting on first use."""
    root = tmp_path_factory.mktemp("tflrt_models")
    cache = {}

    def get(name):
        if name not in cache:
            if name.startswith("mbv2"):
                need(MBV2_WEIGHTS)
            out = root / f"{name}.tflite"
            cmd = [sys.executable, "-m", "converters.export", *MODELS[name][0], "--blocks", "2",
                   "--classes", "5", "--image-size", "96", "--batch", "4", "--output", str(out)]
            proc = subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=600)
            assert proc.returncode == 0, proc.stderr[-3000:]
            cache[name] = out
        return cache[name]

    return get


def run_check(python, runtime, model, dump):
    cmd = [str(python), str(CHECK), str(model), "--images", str(need(PHOTOS)), "--dump", str(dump)]
    proc = subprocess.run(cmd, cwd=REPO, env=_env(TFTL_RUNTIME=runtime), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("name", sorted(MODELS))
def test_trains_on_tflite_runtime_2_14(name, tflrt_python, exported, tmp_path):
    need(PHOTOS)
    model = exported(name)
    rt = run_check(tflrt_python, "tflite_runtime", model, tmp_path / "rt.npz")
    print(name, "tflite_runtime", json.dumps(rt))
    assert "load_error" not in rt, f"tflite_runtime {TFLRT_VERSION} cannot load {name}: {rt['load_error']}"
    assert (rt["runtime"], rt["runtime_version"]) == ("tflite_runtime", TFLRT_VERSION)
    assert rt["numpy_version"].startswith("1.")
    assert rt["signatures"] == ["embed_features", "extract", "extract_micro", "infer", "infer_features", "restore",
                                "save", "train", "train_features"]
    assert rt["probs_sum_ok"] and rt["state_changed"] and rt["restore_ok"] == 1.0
    losses, feature_losses = rt["losses"], rt["feature_losses"]
    assert np.all(np.isfinite(losses + feature_losses))
    assert losses[-1] < 0.99 * losses[0], losses
    assert feature_losses[-1] < feature_losses[0], feature_losses
    assert rt["infer_features_matches_infer"] <= 1e-6
    # save -> restore into a fresh interpreter: same state, same predictions, bit for bit;
    # restoring the exported state and training again repeats the first step exactly.
    assert rt["restore_state_exact"] and rt["restore_exact"] and rt["replay_exact"]

    # Same model, same photos, same first step in the maintained runtime.
    ref = run_check(sys.executable, "ai_edge_litert", model, tmp_path / "ref.npz")
    print(name, "ai_edge_litert", json.dumps(ref))
    assert ref["runtime"] == "ai_edge_litert" and "load_error" not in ref
    loss_tol, tensor_tol = MODELS[name][1]
    assert rt["first_loss"] == pytest.approx(ref["first_loss"], rel=loss_tol)
    a, b = np.load(tmp_path / "rt.npz"), np.load(tmp_path / "ref.npz")
    for key in ("features", "probabilities"):
        rel = float(np.linalg.norm(a[key] - b[key]) / max(float(np.linalg.norm(b[key])), 1e-30))
        assert rel <= tensor_tol, (key, rel)

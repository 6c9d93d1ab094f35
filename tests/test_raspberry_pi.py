"""The Raspberry Pi path on arm64 (issue 18): install, train, evaluate and predict in an emulated
Debian bookworm arm64 root (the userland of 64-bit Raspberry Pi OS), with stock ai-edge-litert;
the epoch-1 loss must equal this host's to 1e-3. A tftl-2 file (scalar learning_rate, which
segfaults aarch64 ai-edge-litert) must have its training refused there with one line instead,
and still evaluate. armhf (32-bit Raspberry Pi OS) runs the tflite-runtime 2.14 fallback the
same way, and trains the tftl-2 file with it.

The suite runs one runtime per architecture: under QEMU each runtime's venv and runs cost
about 5 minutes of one of CI's two cores. `python tests/arm64/smoke.py --arch arm64 --model
M.tflite --legacy L.tflite` (by hand, as root) also runs the tflite-runtime fallback on arm64.

The work is tests/arm64/smoke.py (also runnable by hand); it needs root for debootstrap,
chroot and binfmt_misc, as CI has. TFTL_ARM64_ROOT / TFTL_ARMHF_ROOT name a root folder to
build once and reuse (CI builds a fresh one in a temporary folder: nothing is cached).
"""

import json
import os
import subprocess
import sys

import pytest

from conftest import FLOWERS, PI_MODEL, REPO, need

SMOKE = os.path.join(REPO, "tests", "arm64", "smoke.py")


def _smoke(exported, arch, root_env, *extra):
    if os.geteuid() != 0:
        if os.environ.get("CI"):
            pytest.fail("the arm64 smoke run needs root (debootstrap, chroot, binfmt_misc); CI runs as root")
        pytest.skip("needs root (debootstrap, chroot, binfmt_misc)")
    need(FLOWERS)
    cmd = [sys.executable, SMOKE, "--arch", arch, "--model", str(exported(**PI_MODEL)), *extra]
    if os.environ.get(root_env):
        cmd += ["--root", os.environ[root_env]]
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=3000)
    try:
        report = json.loads(r.stdout)
    except ValueError:
        pytest.fail(f"smoke.py exited {r.returncode} without a report:\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}")
    print(json.dumps(report))  # the figures, in the CI log
    assert r.returncode == 0 and "failed" not in report, report.get("failed", r.stderr[-3000:])
    for run in report["runs"]:
        assert run["loss_diff"] <= 1e-3 and 0 <= run["accuracy"] <= 1, run
    return report


@pytest.mark.slow
def test_pi_path_on_arm64(exported):
    report = _smoke(exported, "arm64", "TFTL_ARM64_ROOT", "--legacy", str(exported(**PI_MODEL, legacy=True)),
                    "--runtimes", "ai-edge-litert")
    [litert] = report["runs"]
    assert litert["runtime"] == "ai-edge-litert"
    assert "tftl-2 file whose" in litert["legacy_refusal"] and "export it again" in litert["legacy_refusal"]
    assert 0 <= litert["legacy_eval_accuracy"] <= 1


@pytest.mark.slow
def test_pi_path_on_armhf(exported):
    report = _smoke(exported, "armhf", "TFTL_ARMHF_ROOT", "--legacy", str(exported(**PI_MODEL, legacy=True)))
    [fallback] = report["runs"]
    assert fallback["runtime"] == "tflite-runtime"
    assert abs(fallback["legacy_epoch1_loss"] - report["host_epoch1_loss"]) <= 1e-3

"""The Raspberry Pi path on an emulated ARM Debian bookworm root: install, train, evaluate, predict.

    sudo python tests/arm64/smoke.py --model m.tflite [--legacy old.tflite] [--arch arm64|armhf]
                                     [--root DIR] [--runtimes ai-edge-litert,tflite-runtime]

As a Pi user would, inside the root (tests/arm64/root.sh builds it: debootstrap, QEMU
user-mode emulation through binfmt_misc): a fresh venv per runtime, `pip install
".[runtime]"` from a copy of this checkout (or tflite-runtime 2.14 with numpy<2, the
documented fallback), then `tftl-train` (1 epoch, --threads 1, seed 0), `tftl-eval` and
`tftl-predict` on 16 flowers5 photos per class. The same `tftl-train` runs on this host; its
epoch-1 loss is the reference. `--legacy` names a tftl-2 file (scalar learning_rate), whose
training ai-edge-litert on aarch64 must refuse with one line (exit 2), not a segfault, while
it still evaluates; tflite-runtime must train it.

armhf (32-bit Raspberry Pi OS): no ai-edge-litert wheel exists; tflite-runtime 2.14 ships
manylinux_2_34_armv7l wheels and numpy has none, so that venv uses Debian's python3-numpy
and python3-pil (--system-site-packages), as a Pi user would.

Prints one JSON object (runtimes, losses, accuracy, timings) and exits 1 when any check fails.
Needs root. A finished root is reused from --root (default: a fresh temporary folder).
"""

import argparse
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(HERE.parent))
from conftest import FLOWER_CLASSES, flowers_subset  # noqa: E402

PER_CLASS = 16
# The parity runs pin the recipe, so that the tftl-3 and tftl-2 files train the same trajectory
# (a tftl-2 file has no `recipe`: tftl.runtime.contract.LEGACY_RECIPE) and the loss is not
# chaotic: on this random-init model the embeddings are ~1e-7, so a head fitted as a probe has
# weights ~1e4 and turns rounding differences between CPUs into different losses. The file's
# own recipe (head fitted first) runs once more with the architecture's first runtime, checked
# for its exit and its head fit.
TRAIN_ARGS = ["--epochs", "1", "--threads", "1", "--seed", "0", "--no-augment", "--lr", "5e-4",
              "--head-init", "none"]
DEFAULT_ARGS = ["--epochs", "1", "--threads", "1", "--seed", "0", "--no-augment"]  # 1 view: the head fit, cheaply
HEAD_FIT_LINE = "head fitted as a linear probe"
LOSS_TOLERANCE = 1e-3
ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root",
       "LANG": "C.UTF-8", "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_CERT": "/etc/ssl/certs/ca-certificates.crt",
       "PIP_DEFAULT_TIMEOUT": "180", "PYTHONDONTWRITEBYTECODE": "1"}
# What each runtime's venv installs, per architecture ("src" = this checkout).
INSTALLS = {
    ("arm64", "ai-edge-litert"): (False, ["/src[runtime]"]),
    ("arm64", "tflite-runtime"): (False, ["numpy<2", "Pillow", "tflite-runtime==2.14.0", "--no-deps", "/src"]),
    ("armhf", "tflite-runtime"): (True, ["--no-deps", "tflite-runtime==2.14.0", "/src"]),
}
RUNTIME_MODULE = {"ai-edge-litert": "ai_edge_litert", "tflite-runtime": "tflite_runtime"}


class Root:
    """An ARM root with /proc mounted while in use (sysfs never: see root.sh)."""

    def __init__(self, path, arch):
        self.path, self.arch = pathlib.Path(path), arch

    def __enter__(self):
        built = subprocess.run(["bash", str(HERE / "root.sh"), str(self.path), self.arch],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        check(built.returncode == 0, f"building the {self.arch} root failed: {built.stderr[-3000:]}")
        proc = self.path / "proc"
        if not os.path.ismount(proc):
            subprocess.run(["mount", "-t", "proc", "proc", str(proc)], check=True)
        return self

    def __exit__(self, *exc):
        subprocess.run(["umount", "-l", str(self.path / "proc")], check=False)

    def run(self, cmd, *, env=None, timeout=1800):
        """Run `cmd` (a list) inside the root; returns CompletedProcess with text output."""
        full = ["chroot", str(self.path), "/usr/bin/env", "-i",
                *[f"{k}={v}" for k, v in {**ENV, **(env or {})}.items()], *cmd]
        return subprocess.run(full, capture_output=True, text=True, timeout=timeout)


def copy_checkout(root):
    """The tracked and untracked-but-not-ignored files of this checkout, into root/src."""
    dst = root.path / "src"
    shutil.rmtree(dst, ignore_errors=True)
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO,
                           capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, files):
        src = REPO / name
        if src.is_file() and not name.startswith(("android_demo/", "web_demo/", "bench/")):
            (dst / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / name)


def install(root, runtime):
    """A venv at /venv-<runtime> with that runtime and tftl; returns (bin dir, seconds)."""
    system_site, packages = INSTALLS[(root.arch, runtime)]
    venv = f"/venv-{runtime}"
    start = time.time()
    if system_site and root.run(["python3", "-c", "import numpy, PIL"]).returncode:  # root.sh unpacks them
        apt = root.run(["sh", "-c", "apt-get update -qq && DEBIAN_FRONTEND=noninteractive "
                        "apt-get install -y -qq python3-numpy python3-pil >/dev/null"])
        check(apt.returncode == 0, f"apt-get in the {root.arch} root failed: {apt.stderr[-2000:]}")
    if (root.path / venv.lstrip("/") / "bin" / "tftl-train").exists():  # a reused root: this checkout's tftl
        packages = ["--no-deps", "--force-reinstall", "/src"]
    else:
        made = root.run(["python3", "-m", "venv", *(["--system-site-packages"] if system_site else []), venv])
        check(made.returncode == 0, f"venv failed: {made.stderr[-2000:]}")
    pip = root.run([f"{venv}/bin/pip", "install", "-q", *packages], timeout=3000)
    check(pip.returncode == 0, f"pip install {' '.join(packages)} failed in the {root.arch} root:\n"
          f"{pip.stderr[-3000:]}")
    return f"{venv}/bin", time.time() - start


class CheckFailed(AssertionError):
    pass


def check(ok, message):
    if not ok:
        raise CheckFailed(message)


def first_loss(history_path):
    return json.loads(pathlib.Path(history_path).read_text())["epochs"][0]["loss"]


def host_reference(model, train_dir, work):
    """tftl-train on this host (x86-64, the suite's venv): the epoch-1 loss to compare with."""
    hist = work / "host_history.json"
    r = subprocess.run([shutil.which("tftl-train") or "tftl-train", str(model), str(train_dir), *TRAIN_ARGS,
                        "--output", str(work / "host_out.tflite"), "--history", str(hist)],
                       capture_output=True, text=True, timeout=1200)
    check(r.returncode == 0, f"host tftl-train failed: {r.stderr[-2000:]}")
    return first_loss(hist)


def device_run(root, bin_dir, runtime, reference, head_fit):
    """tftl-train, tftl-eval and tftl-predict inside the root with `runtime`; the figures.
    head_fit: also train once with the file's own recipe (the head fitted first)."""
    env = {"TFTL_RUNTIME": RUNTIME_MODULE[runtime]}
    out, tag = f"/work/out-{runtime}.tflite", runtime
    start = time.time()
    train = root.run([f"{bin_dir}/tftl-train", "/work/model.tflite", "/work/train", *TRAIN_ARGS, "--overwrite",
                      "--output", out, "--history", f"/work/history-{tag}.json"], env=env)
    seconds = time.time() - start
    check(train.returncode == 0, f"{root.arch} {runtime} tftl-train exited {train.returncode}:\n"
          f"{train.stdout[-1500:]}\n{train.stderr[-3000:]}")
    loss = first_loss(root.path / "work" / f"history-{tag}.json")
    check(abs(loss - reference) <= LOSS_TOLERANCE,
          f"{root.arch} {runtime}: epoch-1 loss {loss} differs from the host's {reference} by more than {LOSS_TOLERANCE}")
    if head_fit:
        recipe_run(root, bin_dir, runtime, env)
    ev = root.run([f"{bin_dir}/tftl-eval", out, "/work/train", "--json", "--threads", "1"], env=env)
    check(ev.returncode == 0, f"{root.arch} {runtime} tftl-eval failed: {ev.stderr[-2000:]}")
    accuracy = json.loads(ev.stdout)["accuracy"]
    photo = sorted((root.path / "work" / "train" / FLOWER_CLASSES[0]).glob("*.jpg"))[0]
    pr = root.run([f"{bin_dir}/tftl-predict", out, f"/work/train/{FLOWER_CLASSES[0]}/{photo.name}",
                   "--top-k", "2"], env=env)
    check(pr.returncode == 0 and any(c in pr.stdout for c in FLOWER_CLASSES),
          f"{root.arch} {runtime} tftl-predict failed: {pr.stdout[-500:]} {pr.stderr[-2000:]}")
    version = root.run([f"{bin_dir}/python", "-c", f"import importlib.metadata as m, numpy; "
                        f"print(m.version('{runtime}'), numpy.__version__)"]).stdout.split()
    return {"runtime": runtime, "version": version[:1], "numpy": version[1:], "epoch1_loss": loss,
            "loss_diff": abs(loss - reference), "train_seconds": round(seconds, 1), "accuracy": accuracy}


def recipe_run(root, bin_dir, runtime, env):
    """tftl-train with the file's own recipe: it must fit the head (embed_features, the probe) and train."""
    run = root.run([f"{bin_dir}/tftl-train", "/work/model.tflite", "/work/train", *DEFAULT_ARGS, "--overwrite",
                    "--output", f"/work/recipe-{runtime}.tflite"], env=env)
    check(run.returncode == 0 and HEAD_FIT_LINE in run.stderr,
          f"{root.arch} {runtime} tftl-train with the file's recipe: exit {run.returncode}, no "
          f"'{HEAD_FIT_LINE}' line:\n{run.stderr[-3000:]}")


def legacy_checks(root, bin_dir, runtime, reference):
    """A tftl-2 file (scalar learning_rate). With ai-edge-litert on aarch64 its training is one
    line and exit 2, not a segfault, and it still evaluates (no scalar input there); with
    tflite-runtime, which resizes a 0-d input safely, it trains like the tftl-3 file."""
    env = {"TFTL_RUNTIME": RUNTIME_MODULE[runtime]}
    out = f"/work/legacy-out-{runtime}.tflite"
    train = root.run([f"{bin_dir}/tftl-train", "/work/legacy.tflite", "/work/train", *TRAIN_ARGS, "--overwrite",
                      "--output", out, "--history", f"/work/legacy-history-{runtime}.json"], env=env)
    if runtime == "tflite-runtime":
        check(train.returncode == 0, f"a tftl-2 file with tflite-runtime on {root.arch}: exit {train.returncode}, "
              f"{train.stderr[-2000:]}")
        loss = first_loss(root.path / "work" / f"legacy-history-{runtime}.json")
        check(abs(loss - reference) <= LOSS_TOLERANCE, f"tftl-2 file, tflite-runtime: loss {loss} vs {reference}")
        return {"legacy_epoch1_loss": loss}
    lines = train.stderr.strip().splitlines()
    check(train.returncode == 2 and len(lines) == 1 and "export it again" in lines[0],
          f"a tftl-2 file on aarch64 ai-edge-litert: exit {train.returncode}, stderr {train.stderr[-1500:]!r}")
    ev = root.run([f"{bin_dir}/tftl-eval", "/work/legacy.tflite", "/work/train", "--json", "--threads", "1"], env=env)
    check(ev.returncode == 0, f"a tftl-2 file's tftl-eval on aarch64 ai-edge-litert failed: {ev.stderr[-2000:]}")
    return {"legacy_refusal": lines[0], "legacy_eval_accuracy": json.loads(ev.stdout)["accuracy"]}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="tftl-3 .tflite with the flowers5 labels")
    ap.add_argument("--legacy", help="a tftl-2 .tflite (scalar learning_rate), the same model as --model")
    ap.add_argument("--arch", default="arm64", choices=("arm64", "armhf"))
    ap.add_argument("--root", help="root folder to build or reuse (default: a fresh temporary one)")
    ap.add_argument("--runtimes", help="comma-separated (default: every runtime the architecture has a wheel for)")
    a = ap.parse_args(argv)
    runtimes = a.runtimes.split(",") if a.runtimes else [r for (arch, r) in INSTALLS if arch == a.arch]
    tmp = None if a.root else tempfile.mkdtemp(prefix=f"tftl-{a.arch}-")
    root_dir = pathlib.Path(a.root or os.path.join(tmp, "root"))
    report = {"arch": a.arch, "runs": []}
    try:
        start = time.time()
        with Root(root_dir, a.arch) as root:
            report["root_ready_seconds"] = round(time.time() - start, 1)
            copy_checkout(root)
            work = root.path / "work"
            shutil.rmtree(work, ignore_errors=True)
            work.mkdir()
            shutil.copy(a.model, work / "model.tflite")
            flowers_subset(work / "train", "train", PER_CLASS)
            with tempfile.TemporaryDirectory() as host_work:
                reference = host_reference(work / "model.tflite", work / "train", pathlib.Path(host_work))
            report["host_epoch1_loss"] = reference
            for runtime in runtimes:
                bin_dir, seconds = install(root, runtime)
                run = device_run(root, bin_dir, runtime, reference, head_fit=runtime == runtimes[0])
                run["install_seconds"] = round(seconds, 1)
                report["runs"].append(run)
                if a.legacy:
                    shutil.copy(a.legacy, work / "legacy.tflite")
                    run.update(legacy_checks(root, bin_dir, runtime, reference))
    except CheckFailed as e:
        report["failed"] = str(e)
    finally:
        if tmp:  # Root.__exit__ has unmounted /proc
            shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(report, indent=1))
    return 1 if "failed" in report else 0


if __name__ == "__main__":
    sys.exit(main())

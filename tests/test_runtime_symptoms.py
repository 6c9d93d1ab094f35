"""The adversarial symptoms of issue 21 (item 5), each reproduced as a new user met it.

A small random-init model (mbv3_small, 64 px, batch 4, labels cat/dog) and a few generated
PNGs keep every run to a second or two; each test failed before its fix.
"""

import errno
import fcntl
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from tftl.runtime import checkpoint as ck
from tftl.runtime import files, metrics
from tftl.runtime.cli import eval_main, predict_main, train_main
from tftl.runtime.modelfile import save_model
from tftl.runtime.session import Session

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LABELS = ["cat", "dog"]


@pytest.fixture(scope="module")
def model(exported):
    return exported("mbv3_small", blocks=2, image_size=64, batch=4, labels=LABELS)


def make_images(root, per_class=2, seed=0):
    """per_class random PNGs per label: per_class=2 is one batch of 4, a single step per epoch."""
    rng = np.random.default_rng(seed)
    for label in LABELS:
        os.makedirs(root / label, exist_ok=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)).save(root / label / f"{i}.png")
    return root


def train(model, images, out, *args, ckpt=None):
    argv = [str(model), str(images), "--output", str(out), "--warmup-steps", "0", *map(str, args)]
    return train_main(argv + (["--checkpoint-dir", str(ckpt)] if ckpt else []))


def error_lines(err, prog="tftl-train"):
    assert "Traceback" not in err, err[-3000:]
    return [ln for ln in err.splitlines() if ln.startswith(f"{prog}: error: ")]


def one_error(capsys, prog="tftl-train"):
    lines = error_lines(capsys.readouterr().err, prog)
    assert len(lines) == 1, lines
    return lines[0]


def nan_model(model, path):
    """What tftl-train wrote before the fix: one step at lr 1e30 leaves finite weights (about
    1e30) whose every prediction is NaN, saved as a fine-tuned model."""
    s = Session(model, threads=1)
    feats = s.extract(np.full((s.batch, s.image_size, s.image_size, 3), 127.0, np.float32))
    s.train_features_step(feats, np.array([0, 1, 0, 1], np.int32), 1e30)
    state = s.state()
    assert all(np.isfinite(v).all() for v in state.values())
    assert not np.isfinite(s.predict_features(feats)).all()
    save_model(path, s.model_file, s.labels, state)
    return path


# --- a NaN model written with exit 0 --------------------------------------------------------


def test_nan_model_is_never_written(model, tmp_path, capsys):
    images = make_images(tmp_path / "one_batch")
    # from the file's head: a head fitted to these 4 photos leaves float32 gradients of exactly 0
    rc = train(model, images, tmp_path / "out.tflite", "--lr", "1e30", "--epochs", 1, "--head-init", "none")
    line = one_error(capsys)
    assert rc == 1 and "NaN or infinite" in line and "lower the learning rate" in line, line
    assert not (tmp_path / "out.tflite").exists()
    checkpoint = tmp_path / "out.tflite.ckpt" / ck.CHECKPOINT_NAME
    assert not checkpoint.exists()  # a state whose outputs are NaN is not a "good" checkpoint either


def test_eval_and_predict_refuse_a_model_with_nan_outputs(model, tmp_path, capsys):
    bad = nan_model(model, tmp_path / "nan.tflite")
    images = make_images(tmp_path / "images")
    capsys.readouterr()
    assert eval_main([str(bad), str(images)]) == 2
    line = one_error(capsys, "tftl-eval")
    assert "nan.tflite" in line and "NaN or infinite outputs" in line and "lower --lr" in line, line
    assert predict_main([str(bad), str(images / "cat" / "0.png")]) == 2
    assert "NaN or infinite outputs" in one_error(capsys, "tftl-predict")
    assert eval_main([str(model), str(images)]) == 0  # the model it came from still evaluates


# --- a diverged run cannot be continued ----------------------------------------------------


def test_a_diverged_run_continues_with_a_lower_learning_rate(model, tmp_path, capsys):
    images = make_images(tmp_path / "images")
    out = tmp_path / "out.tflite"
    assert train(model, images, out, "--lr", "1e30", "--epochs", 2) == 1
    one_error(capsys)
    assert train(model, images, out, "--lr", "1e-4", "--epochs", 2, "--resume") == 0, capsys.readouterr().err
    capsys.readouterr()
    s = Session(out, threads=1)
    probs = s.predict(np.full((2, s.image_size, s.image_size, 3), 100.0, np.float32))
    assert np.isfinite(probs).all()


def test_resume_refuses_a_checkpoint_whose_outputs_are_nan(model, tmp_path, capsys):
    """A checkpoint kept by an earlier version (finite weights of 1e30): resuming from it says so."""
    images = make_images(tmp_path / "images")
    out, ckpt = tmp_path / "out.tflite", tmp_path / "ckpt"
    assert train(model, images, out, "--lr", "1e-4", "--epochs", 1, ckpt=ckpt) == 0
    path = ckpt / ck.CHECKPOINT_NAME
    bad = Session(nan_model(model, tmp_path / "nan.tflite"), threads=1).state()
    _, meta = ck.load_checkpoint(path)
    ck.save_checkpoint(path, bad, meta)
    capsys.readouterr()
    assert train(model, images, out, "--lr", "1e-4", "--epochs", 2, "--resume", ckpt=ckpt) == 2
    line = one_error(capsys)
    assert str(path) in line and "NaN or infinite outputs" in line and "--overwrite" in line, line
    assert train(model, images, out, "--lr", "1e-4", "--epochs", 2, "--overwrite", ckpt=ckpt) == 0


# --- stale temp files stay forever ---------------------------------------------------------


KILLED_WRITER = r"""
import sys, time
from tftl.runtime import files
with files.atomic_write(sys.argv[1]) as f:
    f.write(b"half a checkpoint")
    f.flush()
    print("ready", flush=True)
    time.sleep(120)
"""


def zombie_writer(target):
    """A writer killed (kill -9) in the middle of an atomic write and not reaped: its pid still
    answers os.kill(pid, 0), as a recycled pid or a container's pid 1 would."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(target)], stdout=subprocess.PIPE, env=env)
    assert proc.stdout.readline().strip() == b"ready"
    os.kill(proc.pid, 9)
    while open(f"/proc/{proc.pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z":
        os.sched_yield()
    os.kill(proc.pid, 0)  # still "alive" by pid
    return proc


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux /proc to see the zombie")
def test_stale_temp_files_are_removed_at_the_start_of_a_run(model, tmp_path, capsys):
    """Those of a dead writer are removed (they were kept forever when its pid still answered);
    a live writer's temp file (it holds the lock) and files of other names stay."""
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    target = ckpt / ck.CHECKPOINT_NAME
    proc = zombie_writer(target)
    try:
        dead = [n for n in os.listdir(ckpt) if f"tftl{proc.pid}-" in n]
        assert len(dead) == 1 and dead[0].endswith(".tmp")
        pid1 = ckpt / f".{ck.CHECKPOINT_NAME}.tftl1-abc.tmp"  # every run is pid 1 in a container
        pid1.write_bytes(b"x" * 1000)
        live = ckpt / f".{ck.CHECKPOINT_NAME}.tftl{os.getpid()}-live.tmp"
        fd = os.open(live, os.O_CREAT | os.O_RDWR)
        fcntl.flock(fd, fcntl.LOCK_EX)  # a writer in progress
        other = ckpt / ".history.json.tftl1-x.tmp"
        other.write_bytes(b"y")
        images = make_images(tmp_path / "images")
        assert train(model, images, tmp_path / "out.tflite", "--epochs", 1, "--resume", ckpt=ckpt) == 0
        left = sorted(os.listdir(ckpt))
        assert left == sorted([ck.CHECKPOINT_NAME, live.name, other.name]), left
        os.close(fd)
    finally:
        proc.wait()


# --- a full disk ---------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path):
    """mount(size) mounts a tmpfs of `size` bytes (remount to resize); unmounted after."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mount = tmp_path / "disk"
    mount.mkdir()

    def mount_it(size, remount=False):
        opts = f"{'remount,' if remount else ''}size={size}"
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(mount)], capture_output=True, text=True)
        if r.returncode:
            pytest.skip(f"mount -t tmpfs failed: {r.stderr.strip()}")
        return mount

    yield mount_it
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_names_the_file_and_keeps_the_last_checkpoint(model, tmp_path, capsys, small_disk):
    images = make_images(tmp_path / "images")
    probe = tmp_path / "probe"
    probe.mkdir()
    assert train(model, images, probe / "out.tflite", "--epochs", 1, ckpt=probe / "ckpt") == 0
    size = os.path.getsize(probe / "ckpt" / ck.CHECKPOINT_NAME)
    # Nearly full: not even one checkpoint fits.
    disk = small_disk(size // 2)
    capsys.readouterr()
    assert train(model, images, disk / "out.tflite", "--epochs", 1, ckpt=disk / "ckpt") == 2
    line = one_error(capsys)
    assert str(disk / "ckpt" / ck.CHECKPOINT_NAME) in line and "disk is full" in line and "free some space" in line
    assert os.listdir(disk / "ckpt") == []  # no .lock, no temp file
    # Room for 1.5 checkpoints: epoch 1 is written, epoch 2's does not fit.
    disk = small_disk(size * 3 // 2, remount=True)
    assert train(model, images, tmp_path / "out.tflite", "--epochs", 2, "--overwrite", ckpt=disk / "ckpt") == 2
    line = one_error(capsys)
    assert "disk is full" in line and "epoch 1 is kept" in line and "--resume" in line, line
    assert os.listdir(disk / "ckpt") == [ck.CHECKPOINT_NAME]
    assert ck.load_checkpoint(disk / "ckpt" / ck.CHECKPOINT_NAME)[1]["epoch"] == 1
    small_disk(size * 3, remount=True)  # space freed: the run continues from epoch 1
    assert train(model, images, tmp_path / "out.tflite", "--epochs", 2, "--resume", ckpt=disk / "ckpt") == 0
    assert "resumed from" in capsys.readouterr().err and os.listdir(disk / "ckpt") == [ck.CHECKPOINT_NAME]


def test_a_failed_write_names_the_file_it_was_writing(tmp_path, monkeypatch):
    """Without root: os.fsync failing with ENOSPC, as a full disk does."""
    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError) as info:
        ck.save_checkpoint(tmp_path / "c.npz", {"w": np.zeros(3, np.float32)}, {})
    assert info.value.filename == str(tmp_path / "c.npz") and os.listdir(tmp_path) == []
    line = files.write_problem(info.value, fix="pass --checkpoint-dir")
    assert line.startswith(f"cannot write {tmp_path / 'c.npz'}: the disk is full") and "free some space" in line


# --- a file name with a newline ------------------------------------------------------------


def test_a_newline_in_a_file_name_stays_on_its_line(model, tmp_path, capsys):
    images = make_images(tmp_path / "images")
    (images / "cat" / "evil\nb.png").write_bytes(b"not an image")
    (images / "cat" / "esc\x1b[2J.png").write_bytes(b"not an image either")
    capsys.readouterr()
    assert eval_main([str(model), str(images)]) == 0
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert any(ln.startswith("  ") and "evil\\nb.png: " in ln for ln in lines), err
    assert any("esc\\x1b[2J.png: " in ln for ln in lines) and "\x1b" not in err
    assert not any(ln.startswith("b.png") for ln in lines)
    assert metrics.skipped_lines([{"path": "a\u2028b", "reason": "x\ny"}]) == [
        "warning: skipped 1 unreadable image(s):", "  a\\u2028b: x\\ny"]
    assert predict_main([str(model), str(images / "cat" / "0.png"), str(tmp_path / "gone\n.png")]) == 0
    assert "warning: skipped " + str(tmp_path / "gone\\n.png") + ": " in capsys.readouterr().err


# --- an unwritable --output in a special file system ---------------------------------------


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux /proc")
def test_an_output_in_proc_is_refused_before_any_work(model, tmp_path, capsys):
    r = subprocess.run([sys.executable, "-m", "converters.export", "--model", "mbv3_small", "--weights", "none",
                        "--image-size", "64", "--output", "/proc/x.tflite"], cwd=REPO, capture_output=True, text=True,
                       env=dict(os.environ, PYTHONPATH=REPO), timeout=120)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 2 and len(lines) == 1, r.stderr[-2000:]
    assert "/proc/x.tflite" in lines[0] and ".tmp" not in lines[0] and "pass an --output" in lines[0], lines[0]
    images = make_images(tmp_path / "images")
    capsys.readouterr()
    assert train(model, images, "/proc/x.tflite", "--epochs", 1, ckpt=tmp_path / "ckpt") == 2
    line = one_error(capsys)
    assert "--output /proc/x.tflite cannot be written" in line and not (tmp_path / "ckpt").exists()


def test_create_problem_probes_with_a_real_file(tmp_path):
    assert files.create_problem(tmp_path / "x.tflite") is None and os.listdir(tmp_path) == []
    assert files.create_problem(tmp_path / "missing" / "x.tflite")

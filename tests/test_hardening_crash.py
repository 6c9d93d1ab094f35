"""Crash safety of the writers: a full disk and a memmap over a sparse file.

The disk-full tests mount a 1 MiB tmpfs, so they need root; elsewhere (a CI runner that
is not root, an unprivileged container where mount fails) they skip with the reason.
kill -9 during a checkpoint write is in test_hardening_adversarial.py (test_data_loss_kill_9_*).
"""

import errno
import os
import subprocess
import sys

import numpy as np
import pytest

from tftl.runtime import checkpoint as ckpt
from tftl.runtime import files, modelfile

FAKE_FLATBUFFER = b"\x1c\x00\x00\x00TFL3" + b"\x00" * 56
META = {"format": "tftl-2", "model": "tiny", "scheme": "ft_last", "image_size": 8, "batch": 2}


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MiB tmpfs mounted for the test, unmounted after."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mount = tmp_path / "disk"
    mount.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"mount -t tmpfs failed: {result.stderr.strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_full_disk_keeps_the_previous_checkpoint_and_no_temp_file(small_disk):
    path = small_disk / "checkpoint.npz"
    ckpt.save_checkpoint(path, {"w": np.full(50_000, 1.0, np.float32)}, {"version": 1})  # 200 KB
    with pytest.raises(OSError) as info:
        ckpt.save_checkpoint(path, {"w": np.full(500_000, 2.0, np.float32)}, {"version": 2})  # 2 MB
    assert info.value.errno in (errno.ENOSPC, errno.EDQUOT)
    arrays, meta = ckpt.load_checkpoint(path)
    assert meta == {"version": 1} and np.all(arrays["w"] == 1.0)
    assert os.listdir(small_disk) == ["checkpoint.npz"]


def test_full_disk_never_leaves_a_half_written_model(small_disk):
    path = small_disk / "out.tflite"
    big = FAKE_FLATBUFFER + b"\x00" * (2 << 20)
    with pytest.raises(OSError):
        modelfile.write_model(path, big, META, ["a", "b"])
    assert os.listdir(small_disk) == []


SPARSE_MEMMAP = r"""
import sys, numpy as np
path, prealloc = sys.argv[1], sys.argv[2] == "1"
shape = (4 << 20,)  # 8 MiB of float16 on a 1 MiB disk
if prealloc:
    from tftl.runtime import files
    with open(path, "wb") as f:
        try:
            files.preallocate(f, 2 * shape[0])
        except OSError as e:
            print("refused", e.errno, flush=True)
            sys.exit(3)
m = np.memmap(path, np.float16, "w+", shape=shape)
m[:] = 1.0
m.flush()
print("wrote", flush=True)
"""


@pytest.mark.parametrize("prealloc", [False, True], ids=["sparse_memmap", "preallocated"])
def test_memmap_on_full_disk_bus_error_vs_preallocate(small_disk, prealloc):
    """Why the feature cache must call files.preallocate: a sparse memmap dies with SIGBUS."""
    path = small_disk / "features.f16"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.run([sys.executable, "-c", SPARSE_MEMMAP, str(path), "1" if prealloc else "0"],
                          capture_output=True, text=True, env=env, timeout=120)
    if prealloc:
        assert proc.returncode == 3 and proc.stdout.startswith(f"refused {errno.ENOSPC}")
    else:
        assert proc.returncode == -7, (proc.returncode, proc.stdout, proc.stderr)  # SIGBUS


def test_preallocate_reserves_the_blocks(tmp_path):
    with open(tmp_path / "f", "wb") as f:
        files.preallocate(f, 1 << 20)
    st = os.stat(tmp_path / "f")
    assert st.st_size == 1 << 20 and st.st_blocks * 512 >= 1 << 20


def test_clean_stale_temps_only_touches_its_own_target(tmp_path):
    for name in (".a.npz.1.tmp", ".a.npz.2.tmp", ".b.npz.1.tmp", "a.npz"):
        (tmp_path / name).write_bytes(b"x")
    removed = files.clean_stale_temps(tmp_path / "a.npz")
    assert sorted(os.path.basename(p) for p in removed) == [".a.npz.1.tmp", ".a.npz.2.tmp"]
    assert sorted(os.listdir(tmp_path)) == [".b.npz.1.tmp", "a.npz"]


def test_clean_stale_temps_with_glob_characters_in_the_name(tmp_path):
    (tmp_path / ".a[1].npz.x.tmp").write_bytes(b"x")
    (tmp_path / ".a1.npz.x.tmp").write_bytes(b"x")
    files.clean_stale_temps(tmp_path / "a[1].npz")
    assert os.listdir(tmp_path) == [".a1.npz.x.tmp"]


def test_output_mode_is_the_umask_default(tmp_path):
    old = os.umask(0o027)
    try:
        assert files.output_mode() == 0o640
        with files.atomic_write(tmp_path / "x") as f:
            f.write(b"1")
    finally:
        os.umask(old)
    assert (tmp_path / "x").stat().st_mode & 0o777 == 0o640

"""The runtime as a library (Trainer, Schedule, TrainState, features, Session state, labels,
flags) and the examples, on a real exported model (mbv2 96 px, ImageNet weights, labels
fixed at export) and flowers5 photos."""

import concurrent.futures
import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from test_runtime_cli import CLASSES, ENV, REPO, copy_subset, export
from tftl.runtime import checkpoint as ck
from tftl.runtime import config, contract, data, features, labels, loop
from tftl.runtime.errors import InputError
from tftl.runtime.checkpoint import CHECKPOINT_NAME
from tftl.runtime.loop import Schedule, Trainer, cosine_lr
from tftl.runtime.modelfile import save_model
from tftl.runtime.session import Session


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """mbv2, 96 px, mobiletl with 2 trained blocks, the five flowers5 labels fixed at export."""
    tmp = tmp_path_factory.mktemp("fixed")
    (tmp / "labels.txt").write_text("\n".join(CLASSES) + "\n")
    return export(tmp / "mbv2_96_fixed.tflite", "--blocks", "2", "--image-size", "96",
                  "--labels", str(tmp / "labels.txt"))


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    root = tmp_path_factory.mktemp("photos")
    return copy_subset(root / "train", "train", 12), copy_subset(root / "val", "val", 6)


@pytest.fixture(scope="module")
def arrays(model, photos):
    s = Session(model)
    smp = features.as_samples(str(photos[0]), labels=s.labels)
    return np.stack([data.load_image(p, s.image_size) for p in smp.paths]), smp.labels


def test_fit_on_arrays_continues_the_schedule_across_rounds(model, arrays):
    s = Session(model, threads=1)
    steps = -(-len(arrays[1]) // s.batch)
    rounds, losses = 3, []
    for r in range(rounds):
        schedule = Schedule(1e-3, total_steps=rounds * steps, offset=r * steps)
        recipe = dataclasses.replace(s.meta.recipe, head_init="none")  # federated rounds keep their head
        result = Trainer(s, seed=r, quiet=True, recipe=recipe).fit(arrays, epochs=1, schedule=schedule)
        entry = result.history[-1]
        # the last step of round r is step r*steps + steps - 1 of ONE schedule (no restarted warm-up)
        assert entry["learning_rate"] == pytest.approx(cosine_lr(1e-3, (r + 1) * steps - 1, rounds * steps,
                                                                 min(50, rounds * steps // 10)))
        assert result.state.global_step == steps and result.settings["schedule_offset"] == r * steps
        losses.append(entry["loss"])
    assert losses[0] > losses[1] > losses[2], losses


def test_default_epochs_give_a_small_training_set_enough_steps(model, arrays):
    legacy = contract.LEGACY_RECIPE
    assert [loop.default_epochs(n, 8, legacy) for n in (4000, 400, 200, 150, 1)] == [10, 10, 20, 27, 500]
    # the same rule with a small step floor, so the run is short: 60 photos are 8 steps of 8 an epoch
    recipe = contract.Recipe(epochs=2, min_steps=20)
    s = Session(model, threads=1)
    result = Trainer(s, seed=0, quiet=True, recipe=recipe).fit(arrays, epochs=None)
    assert len(arrays[1]) == 60 and s.batch == 8
    assert (result.settings["epochs"], result.settings["total_steps"], len(result.history)) == (3, 24, 3)
    assert result.state.global_step == 24


def test_resume_from_a_state_equals_one_fit(model, photos):
    a, b = Session(model, threads=1), Session(model, threads=1)
    one = Trainer(a, seed=3, quiet=True).fit(str(photos[0]), epochs=2)
    t = Trainer(b, seed=3, quiet=True)
    first = t.fit(str(photos[0]), epochs=1, schedule=Schedule(total_steps=one.settings["total_steps"]))
    two = t.fit(str(photos[0]), epochs=2, state=first.state)
    assert [e["loss"] for e in one.history] == [e["loss"] for e in two.history]
    sa, sb = a.state(), b.state()
    assert max(float(np.abs(sa[k] - sb[k]).max()) for k in sa) <= 1e-6


def test_a_checkpoint_without_optional_keys_resumes(model, photos, tmp_path, capsys):
    """What the Android app writes: no numpy RNG state, partial, settings, history or skipped."""
    s = Session(model, threads=1)
    Trainer(s, seed=0, quiet=True).fit(str(photos[0]), epochs=1)
    meta = {"format": "tftl-train-1", "model_hash": s.model_hash, "labels": s.labels, "epoch": 1, "position": 0,
            "global_step": 8}
    path = tmp_path / CHECKPOINT_NAME
    ck.save_checkpoint(path, s.state(), meta)
    fresh = Session(model, threads=1)
    t = Trainer(fresh, seed=0, err=sys.stderr, out=sys.stdout)
    state = t.resume(str(path))
    assert "re-seeded" in capsys.readouterr().err
    result = t.fit(str(photos[0]), epochs=2, state=state, checkpoint=str(path))
    assert [e["epoch"] for e in result.history] == [2] and result.state.global_step == 16
    assert ck.load_checkpoint(path)[1]["epoch"] == 2

    for bad in ({"epoch": "1"}, {"position": -1}, {"rng_state": [1, 2]}, {"partial": {"seen": "x"}},
                {"history": [1]}):
        ck.save_checkpoint(path, s.state(), {**meta, **bad})
        with pytest.raises(ck.CheckpointError, match="checkpoint") as e:
            Trainer(Session(model), quiet=True).resume(str(path))
        assert "\n" not in str(e.value)


def test_the_feature_cache_is_keyed_on_the_trunk_so_a_finetuned_file_reuses_it(model, photos, tmp_path):
    base = Session(model, threads=1)
    Trainer(base, seed=0, quiet=True, cache=False).fit(str(photos[0]), epochs=1)
    tuned_path = tmp_path / "tuned.tflite"
    save_model(tuned_path, base.model_file, base.labels, base.state())
    tuned = Session(tuned_path, threads=1)
    assert tuned.trunk_hash == Session(model).trunk_hash and tuned.model_hash != Session(model).model_hash
    smp = features.as_samples(str(photos[1]), labels=base.labels)
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        kw = dict(views=2, augment=True, seed=4, path=str(tmp_path / "f.f16"))
        built = features.build_cache(Session(model), smp, pool, **kw)
        reused = features.build_cache(tuned, smp, pool, **kw)
        other_seed = features.build_cache(tuned, smp, pool, **{**kw, "seed": 5})
    assert built.info["storage"] == "file" and reused.info["storage"] == "file, reused"
    assert other_seed.info["storage"] == "file"
    np.testing.assert_array_equal(np.asarray(built.features), np.asarray(reused.features))


def test_reset_optimizer_keeps_weights_and_zeroes_adam(model, arrays):
    s = Session(model, threads=1)
    Trainer(s, quiet=True).fit(arrays, epochs=1)
    before = s.state()
    assert any(np.abs(before[n]).max() > 0 for n in s.meta.state_groups[contract.OPTIMIZER])
    s.reset_optimizer()
    after = s.state()
    assert all(not after[n].any() for n in s.meta.state_groups[contract.OPTIMIZER])
    for n in s.meta.state_groups[contract.TRAINABLE] + s.meta.state_groups[contract.BN_STATISTICS]:
        np.testing.assert_array_equal(before[n], after[n])


def test_label_resolution_never_guesses():
    ph = [f"class_{i}" for i in range(5)]
    assert labels.resolve(ph, ["roses", "daisy"], fill_placeholders=True)[0] == \
        ["daisy", "roses", "class_2", "class_3", "class_4"]
    with pytest.raises(InputError, match="--fill-placeholders"):
        labels.resolve(ph, ["roses"])
    assert labels.resolve(["a", "b", "c"], ["c", "a"]) == (["a", "b", "c"], {})
    with pytest.raises(InputError, match="re-export the model with --labels"):
        labels.resolve(["a", "b", "c"], ["a", "zebra"], fill_placeholders=True)
    assert labels.resolve(["d", "class_1"], ["x"], explicit=["d", "x"])[0] == ["d", "x"]
    with pytest.raises(InputError, match="fixed it as 'd'"):
        labels.resolve(["d", "class_1"], ["x"], explicit=["y", "x"])
    with pytest.raises(InputError, match="--classes 6"):
        labels.resolve(ph, list("abcdef"), fill_placeholders=True)


def test_every_flag_is_one_field_and_reaches_the_config():
    fields = {f.name for f in config.dataclasses.fields(config.TrainConfig)}
    p = config.parser(config.TrainConfig, "t", "d")
    dests = {a.dest for a in p._actions if a.dest != "help"}
    assert dests == fields
    cfg = config.from_args(config.TrainConfig, p.parse_args(["m", "i", "--cache-views", "3", "--no-augment",
                                                            "--val-split", "0.5", "--threads", "2"]))
    # epochs None: the trainer picks loop.default_epochs for the training set it reads
    assert (cfg.cache_views, cfg.augment, cfg.val_split, cfg.threads, cfg.epochs) == (3, False, 0.5, 2, None)
    for bad in (["--threads", "100000"], ["--lr", "nan"], ["--val-split", "1"], ["--cache-ram-mb", "-1"],
                ["--cache-views", "1000"], ["--epochs", "0"], ["--resume", "--overwrite"]):
        with pytest.raises(SystemExit):
            p.parse_args(["m", "i", *bad])
    with pytest.raises(InputError, match="--threads"):
        config.TrainConfig(model="m", images="i", threads=0).check()


def _run_example(name, *args):
    proc = subprocess.run([sys.executable, str(REPO / "examples" / name), *map(str, args)], cwd=REPO, env=ENV,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_federated_example(model, photos):
    rounds = json.loads(_run_example("federated_client.py", model, photos[0], "--rounds", "3"))["rounds"]
    losses = [np.mean([c["loss"] for c in r]) for r in rounds]
    assert losses[0] > losses[1] > losses[2], losses
    lrs = [r[0]["learning_rate"] for r in rounds]
    assert lrs[0] > lrs[1] > lrs[2] > 0


def test_app_example_resumes_and_classifies(model, photos, tmp_path):
    sys.path.insert(0, str(REPO / "examples"))
    try:
        import app_client
    finally:
        sys.path.pop(0)
    out, history = app_client.personalise(model, photos[0], tmp_path, epochs=1)
    out, history = app_client.personalise(model, photos[0], tmp_path, epochs=3)  # continues: 2 more epochs
    assert [e["epoch"] for e in history] == [1, 2, 3]
    result = app_client.evaluate.evaluate(Session(out), photos[1])
    assert result["accuracy"] >= 0.5, result  # chance is 0.2
    roses = sorted((photos[1] / "roses").glob("*.jpg"))
    preds = app_client.classify(out, [*roses, tmp_path / "missing.jpg"])
    assert len(preds) == len(roses) and all(label in CLASSES for _, label, _ in preds)


# --- the CLI checks paths before work, and never loses or corrupts a run --------------------


def train_cli(model, images, tmp, *args):
    from tftl.runtime.cli import train_main

    return train_main([str(model), str(images), "--output", str(tmp / "out.tflite"), *map(str, args)])


def one_error(capsys):
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("INFO:")]
    assert "Traceback" not in err and len(lines) == 1 and lines[0].startswith("tftl-train: error: "), err[-2000:]
    return lines[0]


@pytest.fixture(scope="module")
def few(tmp_path_factory):
    """8 photos per class: 5 steps per epoch."""
    return copy_subset(tmp_path_factory.mktemp("few") / "train", "train", 8)


@pytest.mark.parametrize("case", ["output is the model", "history is the model", "history is the output",
                                  "plot is the checkpoint", "output is a folder", "checkpoint dir is the output",
                                  "images is a file", "threads", "checkpoint dir is a file"])
def test_paths_and_options_are_checked_before_work(model, few, tmp_path, capsys, case):
    before = model.read_bytes()
    out = tmp_path / "out.tflite"
    (tmp_path / "c").mkdir()
    args = {"output is the model": ["--output", model],
            "history is the model": ["--history", model],
            "history is the output": ["--history", out],
            "plot is the checkpoint": ["--checkpoint-dir", tmp_path / "c", "--plot", tmp_path / "c" / CHECKPOINT_NAME],
            "output is a folder": ["--output", tmp_path],
            "checkpoint dir is the output": ["--checkpoint-dir", out],
            "images is a file": [],
            "threads": ["--threads", "100000"],
            "checkpoint dir is a file": ["--checkpoint-dir", model]}[case]
    images = model if case == "images is a file" else few
    capsys.readouterr()
    assert train_cli(model, images, tmp_path, *args) == 2
    line = one_error(capsys) if case != "threads" else capsys.readouterr().err
    assert {"output is the model": "is the input model", "history is the model": "is the input model",
            "history is the output": "is --output", "plot is the checkpoint": "is the checkpoint",
            "output is a folder": "is a folder", "checkpoint dir is the output": "is --output",
            "images is a file": "is a file", "threads": "1..256",
            "checkpoint dir is a file": "is a file"}[case] in line, line
    assert model.read_bytes() == before and not out.exists()


def test_an_existing_checkpoint_is_resumed_or_overwritten_never_dropped(model, few, tmp_path, capsys):
    assert train_cli(model, few, tmp_path, "--epochs", 1) == 0
    ckpt_path = tmp_path / "out.tflite.ckpt" / CHECKPOINT_NAME
    saved = ckpt_path.read_bytes()
    capsys.readouterr()
    assert train_cli(model, few, tmp_path, "--epochs", 2) == 2
    line = one_error(capsys)
    assert "--resume" in line and "--overwrite" in line and ckpt_path.read_bytes() == saved
    assert train_cli(model, few, tmp_path, "--epochs", 2, "--resume") == 0
    assert ck.load_checkpoint(ckpt_path)[1]["epoch"] == 2
    assert train_cli(model, few, tmp_path, "--epochs", 1, "--overwrite") == 0
    assert ck.load_checkpoint(ckpt_path)[1]["epoch"] == 1


def test_outputs_follow_the_umask_and_stale_temp_files_go(model, few, tmp_path):
    ckpt_dir = tmp_path / "out.tflite.ckpt"
    ckpt_dir.mkdir()
    crashed = ckpt_dir / ".checkpoint.npz.x1y2.tmp"
    crashed.write_bytes(b"half a checkpoint")
    old_out = tmp_path / ".out.tflite.abc.tmp"
    old_out.write_bytes(b"half a model")
    os.utime(old_out, (1, 1))
    # another write in progress (atomic_write holds a lock on its temp file until the rename):
    # never touched
    young_out = tmp_path / f".out.tflite.tftl{os.getpid()}-def.tmp"
    young_out.write_bytes(b"")
    import fcntl

    writer = os.open(young_out, os.O_RDWR)
    fcntl.flock(writer, fcntl.LOCK_EX)
    old_mask = os.umask(0o027)
    try:
        assert train_cli(model, few, tmp_path, "--epochs", 1, "--history", tmp_path / "h.json") == 0
    finally:
        os.umask(old_mask)
    for f in (tmp_path / "out.tflite", tmp_path / "h.json", ckpt_dir / CHECKPOINT_NAME):
        assert oct(f.stat().st_mode & 0o777) == oct(0o640), f
    assert not crashed.exists() and not old_out.exists() and young_out.exists()
    os.close(writer)


@pytest.mark.skipif(os.name == "nt", reason="POSIX signals")
@pytest.mark.parametrize("sig", ["SIGTERM", "SIGHUP"])
def test_sigterm_and_sighup_save_like_ctrl_c(model, few, tmp_path, sig):
    import signal

    args = [str(model), str(few), "--epochs", "3", "--no-cache-features", "--output", str(tmp_path / "out.tflite")]
    code = "import sys; from tftl.runtime.cli import train_main; sys.exit(train_main(sys.argv[1:]))"
    proc = subprocess.Popen([sys.executable, "-c", code, *args], cwd=REPO, env=ENV, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if line.startswith("epoch 2/3") and "/5 [" in line:
            proc.send_signal(getattr(signal, sig))
            break
    _, rest = proc.communicate(timeout=300)
    err = "".join(seen) + rest
    assert proc.returncode == 130, err[-2000:]
    assert sig in err and "checkpoint saved" in err and "Traceback" not in err
    meta = ck.load_checkpoint(tmp_path / "out.tflite.ckpt" / CHECKPOINT_NAME)[1]
    assert (meta["epoch"], meta["position"]) >= (1, 1)
    assert train_cli(model, few, tmp_path, "--epochs", 3, "--no-cache-features", "--resume") == 0


def test_a_diverged_run_keeps_a_finite_checkpoint_and_writes_no_model(model, tmp_path, capsys):
    one_step = copy_subset(tmp_path / "one", "train", 2, CLASSES[:4])  # 8 photos: one step per epoch
    capsys.readouterr()
    rc = train_cli(model, one_step, tmp_path, "--epochs", 4, "--lr", "1e30", "--warmup-steps", 0)
    err = capsys.readouterr().err
    assert rc == 1 and "Traceback" not in err, err[-2000:]
    assert "became" in err and "lower the learning rate" in err
    assert not (tmp_path / "out.tflite").exists()
    path = tmp_path / "out.tflite.ckpt" / CHECKPOINT_NAME
    if path.exists():
        arrays, _ = ck.load_checkpoint(path)
        assert all(np.isfinite(v).all() for v in arrays.values())


def test_an_internal_error_is_not_called_bad_input(model, few, tmp_path, capsys, monkeypatch):
    from tftl.runtime import run as trainer

    def broken(*a, **k):
        raise ValueError("an internal bug")

    monkeypatch.setattr(trainer, "plan", broken)
    capsys.readouterr()
    assert train_cli(model, few, tmp_path) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "internal error" in err and "an internal bug" in err
    assert "tftl-train: error:" not in err


def test_the_public_api_is_lazy_and_real():
    code = ("import inspect, sys, tftl\n"
            "assert not [m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras')]\n"
            "assert 'shared_dir' not in dir(tftl) and 'shared_dir' not in tftl.__all__\n"
            "print(inspect.signature(tftl.Session), inspect.signature(tftl.profile), tftl.profile.format_summary)\n"
            "print(inspect.signature(tftl.build_model), inspect.signature(tftl.export), inspect.signature(tftl.fit))\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=ENV, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "(model, *, threads=None" in proc.stdout and "scheme='mobiletl'" in proc.stdout
    assert "(name: str, *, num_classes" in proc.stdout and "(model, train_dir" in proc.stdout


def test_a_full_disk_refuses_the_memmap_cache_in_one_line(tmp_path, monkeypatch):
    """Space is reserved before the first write: a sparse memmap on a full disk dies with SIGBUS."""
    import errno

    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "posix_fallocate", full, raising=False)
    with pytest.raises(InputError, match="cannot reserve .* --no-cache-features") as e:
        features._allocate(str(tmp_path / "f.f16"), (2, 100, 3, 3, 160))
    assert "\n" not in str(e.value) and not (tmp_path / "f.f16").exists()
    monkeypatch.undo()
    cache = features._allocate(str(tmp_path / "f.f16"), (2, 10, 4))
    assert cache.shape == (2, 10, 4) and os.path.getsize(tmp_path / "f.f16") == 2 * 2 * 10 * 4


def test_every_console_script_resolves_to_a_main():
    import importlib
    import re

    scripts = dict(re.findall(r'"(tftl-[a-z]+)=([\w.]+:\w+)"', (REPO / "setup.py").read_text()))
    assert set(scripts) == {"tftl-train", "tftl-eval", "tftl-predict", "tftl-check", "tftl-export", "tftl-profile",
                            "tftl-fleet"}
    for target in scripts.values():
        module, func = target.split(":")
        assert callable(getattr(importlib.import_module(module), func)), target
    assert '"absl-py"' not in (REPO / "setup.py").read_text()  # imported nowhere in tftl


def test_the_file_carries_the_exporters_recipe_and_flags_lay_over_it(model):
    from converters.export import RECIPE
    s = Session(model, threads=1)
    recipe = s.meta.recipe
    assert recipe == contract.Recipe(**{**RECIPE.to_dict(), "classifier": ("predictions__kernel", "predictions__bias")})
    cfg = config.TrainConfig(model="m", images="i", lr=0.01, epochs=3)
    over = cfg.recipe(recipe)
    assert (over.lr, over.epochs, over.min_steps, over.cache_views, over.head_init) == (
        0.01, 3, 0, recipe.cache_views, recipe.head_init)
    assert config.TrainConfig(model="m", images="i", head_init="none").recipe(recipe).head_init == "none"
    with pytest.raises(InputError, match="--head-init"):
        config.TrainConfig(model="m", images="i", head_init="zero").check()


def test_head_init_probe_fits_the_classifier_before_the_first_step(model, arrays):
    """LP-FT's LP: after the head fit (and before any step) the model classifies its training
    photos far better than the exported head, and the fit matches tftl.runtime.probe on the
    same embeddings; a 0-epoch fit changes nothing else."""
    from tftl.runtime import probe
    images, y = arrays
    s = Session(model, threads=1)
    before = s.state()
    feats = s.extract(images)
    acc0 = float((s.predict_features(feats).argmax(1) == y).mean())
    recipe = dataclasses.replace(s.meta.recipe, head_init="probe", cache_views=1)
    result = Trainer(s, seed=0, quiet=True, augment=False, recipe=recipe).fit(arrays, epochs=0)
    fit = result.settings["head_fit"]
    after = s.state()
    kernel, bias = recipe.classifier
    acc1 = float((s.predict_features(feats).argmax(1) == y).mean())
    assert acc1 >= 0.9 and acc1 > acc0 + 0.3, (acc0, acc1, fit)
    # the trainer embeds the feature cache (float16 rows with a float32 scale): equal up to its rounding
    want_k, want_b, _ = probe.fit_head(s.embed_features(feats), y, len(s.labels))
    np.testing.assert_allclose(after[kernel], want_k, atol=0.02 * np.abs(want_k).max())
    np.testing.assert_allclose(after[bias], want_b, atol=0.02 * np.abs(want_b).max() + 1e-3)
    assert all(np.array_equal(before[n], after[n]) for n in before if n not in (kernel, bias))

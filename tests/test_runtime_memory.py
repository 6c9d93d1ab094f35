"""The trainer's memory levers change no result: the feature cache's `extract` runs on a
temporary interpreter (freed before training), and a run gives the same losses as a run whose
`extract` stayed resident in the main interpreter. Real model (mbv2 96 px, ImageNet weights),
real flowers5 photos. The memory itself is measured by bench/trainer_rss.py, not asserted here."""

import dataclasses
import numpy as np
import pytest

from test_runtime_cli import copy_subset
from tftl.runtime import contract, data, features
from tftl.runtime import interpreter as rt
from tftl.runtime.loop import Trainer
from tftl.runtime.modelfile import save_model, state_npz_bytes
from tftl.runtime.session import TRAINING, Session, SessionError


@pytest.fixture(scope="module")
def model(mbv2_flowers):
    return mbv2_flowers


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    root = tmp_path_factory.mktemp("photos")
    return copy_subset(root / "train", "train", 8), copy_subset(root / "val", "val", 4)


def test_transient_extract_gives_the_same_features_and_is_freed(model, photos):
    s = Session(model, threads=1)
    smp = features.as_samples(str(photos[0]), labels=s.labels)
    images = np.stack([data.load_image(p, s.image_size) for p in smp.paths[:s.batch]])
    name = s.extract_signature
    assert name == contract.EXTRACT_MICRO and s.micro_batch == 1  # the exporter's default
    with s.transient(name):
        assert name in s._runners
        separate = s.extract(images)
    assert name not in s._runners  # the temporary interpreter is gone
    resident = s.extract(images)  # now on the main interpreter
    np.testing.assert_array_equal(separate, resident)
    with s.transient(name):  # already resident: stays on the main interpreter
        assert s._runners[name] is s.runner(name)
    assert name in s._runners
    # streamed image by image, the trunk gives the training batch's features
    batched = s._batched(contract.EXTRACT, contract.IMAGES, images, contract.FEATURES)
    np.testing.assert_allclose(separate, batched, rtol=1e-4, atol=1e-4 * np.abs(batched).max())
    rt.release_memory()  # callable anywhere, any number of times


def test_a_cached_run_has_the_losses_of_a_run_with_extract_resident(model, photos):
    """The same seed gives exactly the losses and validation accuracy of the old code path
    (extract on the main interpreter: forced here by running extract once before fit)."""
    runs = []
    for resident in (False, True):
        s = Session(model, threads=1)
        if resident:
            s.extract(np.zeros((s.batch, s.image_size, s.image_size, 3), np.float32))
        recipe = dataclasses.replace(s.meta.recipe, head_init="none")  # "it trains": from the file's head
        result = Trainer(s, seed=5, cache=True, quiet=True, recipe=recipe).fit(str(photos[0]), epochs=2,
                                                                              val=str(photos[1]))
        assert (s.extract_signature in s._runners) is resident
        runs.append([(e["loss"], e["val_accuracy"]) for e in result.history])
    assert runs[0] == runs[1]
    assert runs[0][1][0] < runs[0][0][0]  # and it trains


def test_a_training_only_session_trains_exactly_like_the_whole_model(model, photos):
    """tftl-train's Session(signatures=TRAINING): its interpreter is built from the trained
    part's signatures alone (tftl.runtime.subset), the trunk streams on one of its own. Same
    ops, so the same features, losses and trained state bit for bit; what it does not hold it
    refuses with one line."""
    from tftl.runtime import subset

    whole, lean = Session(model, threads=1), Session(model, threads=1, signatures=TRAINING)
    assert lean.resident == set(TRAINING) and lean.signatures == whole.signatures
    assert len(subset.signatures_only(whole.model_file.flatbuffer, TRAINING)) < len(whole.model_file.flatbuffer)
    smp = features.as_samples(str(photos[0]), labels=whole.labels)
    images = np.stack([data.load_image(p, whole.image_size) for p in smp.paths[:whole.batch]])
    np.testing.assert_array_equal(lean.extract(images), whole.extract(images))  # its own trunk interpreter
    with pytest.raises(SessionError, match="runs only"):
        lean.predict(images)
    runs = []
    for s in (whole, Session(model, threads=1, signatures=TRAINING)):
        result = Trainer(s, seed=4, cache=True, quiet=True).fit(str(photos[0]), epochs=2, val=str(photos[1]))
        runs.append(([(e["loss"], e["val_accuracy"]) for e in result.history], s.state()))
        # each main interpreter runs on its own cut (the lean one from the start, the whole one
        # once the fitted head is baked in): the file's bytes are dropped after the head is in
        assert s.model_file.flatbuffer is None
    assert runs[0][0] == runs[1][0]
    assert all(np.array_equal(runs[0][1][k], runs[1][1][k]) for k in runs[0][1])


def test_released_model_bytes_are_read_back_checked_for_the_output(model, photos, tmp_path):
    """A trainer releases the file's bytes (Session.release_model_bytes); the output is then
    written from the file read again, byte for byte what a session that kept them writes, and
    a file changed meanwhile is refused with one line, nothing written."""
    import shutil
    from tftl.runtime import modelfile

    src = tmp_path / "in.tflite"
    shutil.copy(model, src)
    s = Session(str(src), threads=1, signatures=TRAINING)
    kept = s.model_file
    Trainer(s, seed=2, cache=True, quiet=True).fit(str(photos[0]), epochs=1)
    assert s.model_file.flatbuffer is None and kept.flatbuffer is not None
    state = s.state()
    save_model(tmp_path / "released.tflite", s.model_file, s.labels, dict(state))
    save_model(tmp_path / "kept.tflite", kept, s.labels, dict(state))
    assert (tmp_path / "released.tflite").read_bytes() == (tmp_path / "kept.tflite").read_bytes()
    assert modelfile.flatbuffer_of(s.model_file) == kept.flatbuffer  # what a next cache reads
    data = bytearray(src.read_bytes())
    data[len(data) // 4] ^= 0xFF  # inside the flatbuffer: the archive still parses
    src.write_bytes(bytes(data))
    with pytest.raises(modelfile.ModelFileError, match="changed while it was in use") as e:
        save_model(tmp_path / "changed.tflite", s.model_file, s.labels, dict(state))
    assert "\n" not in str(e.value) and str(src) in str(e.value)
    assert not (tmp_path / "changed.tflite").exists()
    with pytest.raises(modelfile.ModelFileError, match="changed while it was in use"):
        modelfile.flatbuffer_of(s.model_file)


def test_save_model_from_state_or_its_bytes_writes_the_same_file(model, tmp_path):
    """The trainer passes state_npz_bytes (the arrays freed before the file is assembled):
    same bytes as passing the dict, and the state reads back exactly."""
    from tftl.runtime.modelfile import deployable

    s = Session(model, threads=1)
    state = s.state()
    save_model(tmp_path / "a.tflite", s.model_file, s.labels, state)  # a dict: made deployable
    save_model(tmp_path / "b.tflite", s.model_file, s.labels,
               state_npz_bytes(deployable(s.model_file, s.state(), consume=True)))
    assert (tmp_path / "a.tflite").read_bytes() == (tmp_path / "b.tflite").read_bytes()
    back = Session(tmp_path / "b.tflite", threads=1).state()
    assert all(np.array_equal(back[k], state[k]) for k in state)  # the optimizer's fresh state is the export's


def test_low_memory_session_trains_like_the_xnnpack_one(model, photos):
    """xnnpack=False (tftl-train --low-memory) runs the training signatures on LiteRT's builtin
    kernels: another summation order, so not bitwise, but the same losses to float tolerance
    and the same trained state after a cached epoch; the feature cache's extract (transient
    interpreter) keeps XNNPACK, so the cached features are identical."""
    runs = []
    for xnnpack in (True, False):
        s = Session(model, threads=1, xnnpack=xnnpack)
        recipe = dataclasses.replace(s.meta.recipe, head_init="none")  # losses falling from the file's head
        result = Trainer(s, seed=3, cache=True, quiet=True, recipe=recipe).fit(str(photos[0]), epochs=2)
        runs.append(([e["loss"] for e in result.history], s.state(("trainable",))))
    (fast_losses, fast_state), (lean_losses, lean_state) = runs
    np.testing.assert_allclose(lean_losses, fast_losses, rtol=2e-3)
    assert lean_losses != fast_losses  # other kernels really ran (XNNPACK's sums differ in the last bits)
    assert lean_losses[1] < lean_losses[0]
    for name, value in fast_state.items():
        np.testing.assert_allclose(lean_state[name], value, rtol=1e-2, atol=1e-4, err_msg=name)


def test_session_reads_a_fine_tuned_file_once(model, tmp_path, monkeypatch):
    """Graph, metadata, labels and state.npz come from one read of the file (issue 21: Session
    read the model, then read_state read the archive again)."""
    from tftl.runtime import files, modelfile

    s = Session(model, threads=1)
    tuned = tmp_path / "tuned.tflite"
    state = s.state()
    save_model(tuned, s.model_file, s.labels, state)
    opened = []
    real = files.open_regular
    monkeypatch.setattr(files, "open_regular", lambda path, **kw: (opened.append(str(path)), real(path, **kw))[1])
    back = Session(tuned, threads=1)
    assert opened == [str(tuned)]
    assert back.has_embedded_state and back.model_hash.startswith(back.trunk_hash + "+")
    restored = back.state()
    assert all(np.array_equal(restored[k], state[k]) for k in state)
    assert modelfile.read_state(str(tuned))[0].keys() == modelfile.deployable(s.model_file, state).keys()


def test_a_file_cache_trains_exactly_like_a_ram_cache_and_is_never_mapped(model, photos, tmp_path):
    """tftl-train's default cache (--cache-ram-mb 0): float16 rows in a file in the checkpoint
    folder, read a batch at a time (tftl.runtime.rowfile), so the cache never sits in the
    process's resident memory (a memmap would: every page an epoch touched). Same rows, so the
    same losses, validation accuracy and trained state bit for bit as the RAM cache."""
    runs = []
    for cache_dir in (None, tmp_path):
        s = Session(model, threads=1, signatures=TRAINING)
        trainer = Trainer(s, seed=6, cache=True, cache_views=2, quiet=True, cache_dir=cache_dir, cache_ram_mb=0)
        result = trainer.fit(str(photos[0]), epochs=2, val=str(photos[1]))
        runs.append(([(e["loss"], e["val_accuracy"]) for e in result.history], s.state(("trainable",)),
                     result.feature_cache["storage"]))
        if cache_dir is not None:
            with open("/proc/self/maps") as f:
                assert str(tmp_path) not in f.read()  # read with positioned reads, never mapped
    (ram_hist, ram_state, ram_where), (file_hist, file_state, file_where) = runs
    assert (ram_where, file_where) == ("ram", "file")
    assert file_hist == ram_hist and file_hist[1][0] < file_hist[0][0]
    assert all(np.array_equal(file_state[k], ram_state[k]) for k in ram_state)
    cached = sorted(p.name for p in tmp_path.iterdir())
    assert cached[:2] == ["features_train.f16", "features_train.f16.json"]
    features.remove_cache(tmp_path)  # what tftl-train does once the output is written
    assert not any(p.name.startswith("features_") for p in tmp_path.iterdir())


def test_the_head_probe_embeds_on_a_freed_interpreter_only_while_the_state_is_the_files(model, photos):
    """`embed_features` reads the trained state: the linear probe runs it on a temporary
    interpreter (freed before training) only while the session's state is still the file's
    own, so both give the same embeddings bit for bit; once a step or a restore may have
    changed the state, it stays on the main interpreter."""
    s = Session(model, threads=1, signatures=TRAINING)
    smp = features.as_samples(str(photos[0]), labels=s.labels)
    feats = s.extract(np.stack([data.load_image(p, s.image_size) for p in smp.paths[:s.batch]]))
    assert s.pristine
    with s.transient(contract.EMBED_FEATURES):
        apart = s.embed_features(feats)
    assert contract.EMBED_FEATURES not in s._runners  # the temporary interpreter is gone
    np.testing.assert_array_equal(apart, s.embed_features(feats))  # now on the main interpreter
    s2 = Session(model, threads=1, signatures=TRAINING)
    s2.train_features_step(feats, np.zeros(s2.batch, np.int32), 1e-3)
    assert not s2.pristine
    with s2.transient(contract.EMBED_FEATURES):
        moved = s2.embed_features(feats)
    assert contract.EMBED_FEATURES in s2._runners  # stayed on (was created on) the main interpreter
    assert not np.array_equal(moved, apart)  # the step changed the state the embeddings read


def test_state_baked_into_the_interpreter_trains_exactly_like_a_restore(model, photos, tmp_path, monkeypatch):
    """While a session's state is still the file's own, restore_state builds its interpreter
    again with the state as the variables' initial values (subset.signatures_only's `initial`)
    instead of running `restore`, whose arena is a second copy of the state: the head fitted
    as a probe, and a fine-tuned file's state.npz. Same state, same steps, bit for bit, as
    the `restore` path; the state is read back a tensor at a time (iter_state) exactly as
    the `save` signature returns it."""
    from tftl.runtime import subset

    first = Session(model, threads=1)
    feats = np.random.default_rng(0).normal(size=(first.batch, *first.feature_shape)).astype(np.float32)
    labels = np.arange(first.batch) % len(first.labels)
    kernel, bias = first.meta.recipe.classifier
    del first
    runs = []
    for bake in (True, False):
        s = Session(model, threads=1, signatures=TRAINING)
        shapes = s.state_shapes()
        head = {kernel: np.linspace(-1, 1, np.prod(shapes[kernel]), dtype=np.float32).reshape(shapes[kernel]),
                bias: np.full(shapes[bias], 0.25, np.float32)}
        s.pristine = bake  # False: the restore signature, as after any step
        s.restore_state(head, what="a head", partial=True)
        assert (contract.RESTORE in s._runners) is not bake and not s.pristine
        np.testing.assert_array_equal(s.state()[kernel], head[kernel])
        losses = [s.train_features_step(feats, labels, 1e-3) for _ in range(2)]
        runs.append((losses, s.state()))
    assert runs[0][0] == runs[1][0]
    assert all(np.array_equal(runs[0][1][k], runs[1][1][k]) for k in runs[1][1])
    saved = s.runner(contract.SAVE)(token=np.zeros(1, np.float32))
    assert [n for n, _ in s.iter_state()] == sorted(saved)
    assert all(np.array_equal(v, saved[n]) for n, v in s.iter_state())

    tuned = tmp_path / "tuned.tflite"
    save_model(tuned, s.model_file, s.labels, runs[1][1])
    baked = Session(tuned, threads=1)
    assert contract.RESTORE not in baked._runners and not baked.pristine
    monkeypatch.setattr(subset, "available", lambda: False)
    restored = Session(tuned, threads=1)
    assert contract.RESTORE in restored._runners
    a, b = baked.state(), restored.state()
    assert all(np.array_equal(a[k], b[k]) for k in b)
    np.testing.assert_array_equal(baked.predict_features(feats), restored.predict_features(feats))
    monkeypatch.undo()  # the schema is back; a graph whose initialiser cannot take the state: `restore`

    def no_initialiser(*args):
        raise ValueError("no initialiser assigns it")

    monkeypatch.setattr(subset, "_bake", no_initialiser)
    fallback = Session(tuned, threads=1)
    assert contract.RESTORE in fallback._runners
    c = fallback.state()
    assert all(np.array_equal(c[k], b[k]) for k in b)

"""bench/accuracy/datasets.py on a tiny synthetic repository (issue 19): no network, no mirror.

A git repository of Pillow-made photos in tmp_path stands in for the fetched mirror: the
builder reads it at its pinned commit, skips what tftl cannot read, removes duplicates, and
writes a disjoint test part, a pool and nested seeded train-nK-sS symlink folders.
"""

import dataclasses
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "bench", "accuracy"))

import datasets  # noqa: E402

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="needs the git command (reads a local repo)")

PER_CLASS = 52  # test 8 + pool 44: every regime (10, 20, 40) fits


def _jpeg(rng, side=100, fmt="JPEG"):
    from PIL import Image

    arr = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, fmt, **({"quality": 60} if fmt == "JPEG" else {}))
    return buf.getvalue()


def _git(cwd, *args):
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid", *args], cwd=cwd, check=True,
                   capture_output=True)


@pytest.fixture(scope="module")
def mirror(tmp_path_factory):
    """(mirrors dir, commit, {name: bytes} of the special files) of a synthetic owner/pets repo."""
    base = tmp_path_factory.mktemp("acc")
    work = base / "work"
    rng = np.random.default_rng(0)
    special = {}
    for c in ("cat", "dog", "owl"):
        (work / "photos" / c).mkdir(parents=True)
        for i in range(PER_CLASS):
            (work / "photos" / c / f"{c}_{i:03d}.jpg").write_bytes(_jpeg(rng))
    shared = _jpeg(rng)  # the same bytes in two classes: an ambiguous label, dropped everywhere
    (work / "photos" / "cat" / "x_shared.jpg").write_bytes(shared)
    (work / "photos" / "dog" / "x_shared.jpg").write_bytes(shared)
    # a repeat within one class: one copy kept
    (work / "photos" / "owl" / "x_repeat.jpg").write_bytes((work / "photos" / "owl" / "owl_000.jpg").read_bytes())
    (work / "photos" / "cat" / "x_small.jpg").write_bytes(_jpeg(rng, side=40))
    (work / "photos" / "cat" / "x_gif.jpg").write_bytes(_jpeg(rng, fmt="GIF"))
    (work / "photos" / "dog" / "x_lfs.jpg").write_bytes(b"version https://git-lfs.github.com/spec/v1\noid sha256:0\n")
    (work / "photos" / "dog" / "x_text.png").write_bytes(b"not an image")
    (work / "photos" / "dog" / "notes.txt").write_text("not listed")
    special["shared"] = shared
    # near duplicates (other bytes, the same picture): a pair within dog stays on one side of
    # the split; a pair across cat and owl is an ambiguous label and goes
    from PIL import Image

    base_dog = rng.integers(0, 256, (100, 100, 3), dtype=np.uint8)
    base_x = rng.integers(0, 256, (100, 100, 3), dtype=np.uint8)
    near = [("y_near_a.jpg", base_dog, "dog"), ("y_near_b.jpg", np.clip(base_dog * 0.9 + 8, 0, 255), "dog"),
            ("y_cross.jpg", base_x, "cat"), ("y_cross.jpg", np.clip(base_x * 0.9 + 8, 0, 255), "owl")]
    for name, arr, folder in near:
        buf = io.BytesIO()
        Image.fromarray(arr.astype(np.uint8)).save(buf, "JPEG", quality=90)
        (work / "photos" / folder / name).write_bytes(buf.getvalue())
    _git(work, "init", "-q")
    _git(work, "add", "-A")
    _git(work, "commit", "-qm", "photos")
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=work, capture_output=True, text=True,
                            check=True).stdout.strip()
    mirrors = base / "mirrors"
    _git(base, "clone", "-q", "--bare", str(work), str(mirrors / "owner+pets" / "repo"))
    # a later commit that must not be read: the builder reads the pinned one
    (work / "photos" / "cat" / "late.jpg").write_bytes(_jpeg(rng))
    _git(work, "add", "-A")
    _git(work, "commit", "-qm", "late")
    _git(work, "push", "-q", str(mirrors / "owner+pets" / "repo"), "HEAD:refs/heads/late")
    return str(mirrors), commit, special


def _ds(commit):
    return datasets.Dataset(name="pets3", domain="pets", repo="owner/pets", commit=commit,
                            classes={c: (f"photos/{c}",) for c in ("cat", "dog", "owl")}, test=8, pool=60,
                            licence="test licence", source="synthetic")


def _snapshot(path):
    out = {}
    for d, _, files in os.walk(path):
        for f in files:
            p = os.path.join(d, f)
            st = os.lstat(p)
            out[p] = (st.st_size, st.st_mtime_ns)
    return out


def _sha(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


@pytest.fixture(scope="module")
def built(mirror, tmp_path_factory):
    mirrors, commit, special = mirror
    root = str(tmp_path_factory.mktemp("datasets"))
    before = _snapshot(mirrors)
    info = datasets.build(_ds(commit), root, mirrors=mirrors, log=lambda *a: None)
    assert _snapshot(mirrors) == before, "the builder wrote into the mirror"
    return root, info, special, mirrors, commit


def test_source_json_fields(built):
    root, info, _, _, commit = built
    with open(os.path.join(root, "pets3", "SOURCE.json")) as f:
        disk = json.load(f)
    assert disk == json.loads(json.dumps(info))
    for key in ("name", "domain", "repo", "commit", "clone_url", "licence", "source", "classes", "split", "counts",
                "regimes", "skipped", "duplicates_removed", "files", "train", "spec"):
        assert key in disk, key
    assert disk["commit"] == commit and disk["repo"] == "owner/pets" and disk["read_from"] == "mirror"
    assert disk["clone_url"] == "https://github.com/owner/pets.git"
    assert sorted(disk["regimes"]) == [f"train-n{k}-s{s}" for k in (10, 20, 40) for s in (0, 1, 2)]
    for c in ("cat", "dog", "owl"):
        assert disk["counts"][c]["test"] == 8
        # the shared, repeated and cross-class near copies are gone; dog has 2 near copies more
        assert disk["counts"][c]["pool"] == PER_CLASS - 8 + (2 if c == "dog" else 0)
    assert not [p for p in os.listdir(root) if p.startswith(".")], "a temp folder was left behind"


def test_skips_and_duplicates(built):
    root, info, special, _, _ = built
    reasons = {os.path.basename(r["path"]): r["reason"] for r in info["skipped"]}
    assert reasons["x_small.jpg"].startswith("too small")
    assert reasons["x_gif.jpg"] == "format not read by tftl: GIF"
    assert reasons["x_lfs.jpg"] == "git-lfs pointer"
    assert reasons["x_text.png"].startswith("undecodable")
    assert "late.jpg" not in {os.path.basename(p) for rows in info["files"].values() for v in rows.values()
                              for p in (r["path"] for r in v)}, "read past the pinned commit"
    removed = {(os.path.basename(r["path"]), r["reason"]) for r in info["duplicates_removed"]}
    assert ("x_shared.jpg", "same bytes in classes cat, dog") in removed
    assert ("y_cross.jpg", "near duplicate across classes cat, owl") in removed
    groups = info["near_duplicates"]["groups"]
    assert ["photos/dog/y_near_a.jpg", "photos/dog/y_near_b.jpg"] in groups
    side = {r["path"]: part for part, by in info["files"].items() for rows in by.values() for r in rows}
    assert side.get("photos/dog/y_near_a.jpg", "unused") == side.get("photos/dog/y_near_b.jpg", "unused")
    assert info["near_duplicates"]["max_test_pool_correlation"] < datasets.NEAR_CORR
    assert any(r.startswith("duplicate within class") for _, r in removed)
    shared = hashlib.sha256(special["shared"]).hexdigest()
    every = [r["sha256"] for part in info["files"].values() for rows in part.values() for r in rows]
    assert shared not in every
    assert len(every) == len(set(every)), "the same bytes twice in the dataset"


def test_test_and_pool_disjoint_by_content(built):
    root, info, _, _, _ = built
    hashes = {}
    for part in ("test", "pool"):
        hashes[part] = set()
        for c in ("cat", "dog", "owl"):
            folder = os.path.join(root, "pets3", part, c)
            for f in os.listdir(folder):
                h = _sha(os.path.join(folder, f))
                assert h in {r["sha256"] for r in info["files"][part][c]}
                hashes[part].add(h)
    assert hashes["test"] and hashes["pool"]
    assert not hashes["test"] & hashes["pool"]
    for regime in info["train"]:  # every training folder's bytes come from the pool only
        for c in ("cat", "dog", "owl"):
            folder = os.path.join(root, "pets3", regime, c)
            for f in os.listdir(folder):
                assert _sha(os.path.join(folder, f)) not in hashes["test"]


def test_symlinks_point_into_the_pool(built):
    root, info, _, _, _ = built
    pool = os.path.realpath(os.path.join(root, "pets3", "pool"))
    for regime, by_class in info["train"].items():
        for c, chosen in by_class.items():
            folder = os.path.join(root, "pets3", regime, c)
            assert sorted(os.listdir(folder)) == sorted(chosen)
            for f in chosen:
                link = os.path.join(folder, f)
                assert os.path.islink(link)
                target = os.readlink(link)
                assert not os.path.isabs(target), "links are relative: the root can move"
                real = os.path.realpath(link)
                assert real == os.path.join(pool, c, f) and os.path.isfile(real)


def test_nested_and_seeded(built):
    root, info, _, _, _ = built
    t = info["train"]
    for s in (0, 1, 2):
        for c in ("cat", "dog", "owl"):
            n10, n20, n40 = (set(t[f"train-n{k}-s{s}"][c]) for k in (10, 20, 40))
            assert len(n10) == 10 and len(n20) == 20 and len(n40) == 40
            assert n10 < n20 < n40
    assert t["train-n10-s0"]["cat"] != t["train-n10-s1"]["cat"], "seeds draw different photos"


def test_deterministic_idempotent_and_atomic(built, tmp_path):
    root, info, _, mirrors, commit = built
    ds = _ds(commit)
    again = datasets.build(ds, str(tmp_path), mirrors=mirrors, log=lambda *a: None)
    assert again["files"] == info["files"] and again["train"] == info["train"]
    assert again["counts"] == info["counts"]
    source = os.path.join(tmp_path, "pets3", "SOURCE.json")
    mtime = os.stat(source).st_mtime_ns
    messages = []
    datasets.build(ds, str(tmp_path), mirrors=mirrors, log=messages.append)
    assert os.stat(source).st_mtime_ns == mtime and "up to date" in messages[0]
    (tmp_path / "pets3" / "features.npz").write_bytes(b"cache")  # kept across a forced rebuild
    datasets.build(ds, str(tmp_path), force=True, mirrors=mirrors, log=lambda *a: None)
    assert (tmp_path / "pets3" / "features.npz").read_bytes() == b"cache"
    assert sorted(os.listdir(tmp_path)) == ["pets3"]
    assert datasets.split_class([{"sha256": f"{i:02d}", "label": "x"} for i in range(20)], "x", 5, 10) == \
        datasets.split_class([{"sha256": f"{i:02d}", "label": "x"} for i in reversed(range(20))], "x", 5, 10)
    items = [{"sha256": f"{i:02d}", "label": "x"} for i in range(20)]
    groups = [[f"{i:02d}" for i in range(0, 20, 4)], ["01", "02"]]  # 5 and 2 near copies
    for seed in range(10):
        test, pool = datasets.split_class(items, "x", 6, 20, seed=seed, groups=groups)
        assert len(test) == 6 and len(test) + len(pool) == 20
        for g in groups:
            assert {h in {t["sha256"] for t in test} for h in g} in ({True}, {False})


def test_sources_markdown_and_registry(built):
    root, info, _, _, commit = built
    md = datasets.sources_markdown([info], root)
    assert "owner/pets" in md and commit in md and "test licence" in md
    names = [d.name for d in datasets.REGISTRY]
    assert len(names) == len(set(names)) >= 4
    for d in datasets.REGISTRY:
        assert len(d.commit) == 40 and int(d.commit, 16) >= 0
        assert "flower" not in (d.name + d.source).lower() and "food" not in (d.name + d.source).lower()
        assert d.licence and d.domain and len(d.classes) >= 4
    assert len({d.domain for d in datasets.REGISTRY}) == len(datasets.REGISTRY)


def test_missing_commit_is_refused(mirror, tmp_path):
    mirrors, _, _ = mirror
    with pytest.raises(SystemExit, match="not in"):
        datasets.build(_ds("0" * 40), str(tmp_path), mirrors=mirrors, log=lambda *a: None)


def test_gram_probe_matches_linear_probe():
    """bench/accuracy/probe.py's fit on the Gram matrix gives bench/linear_probe.py's weights."""
    sys.path.insert(0, os.path.join(ROOT, "bench"))
    import linear_probe
    import probe

    rng = np.random.default_rng(1)
    x = rng.normal(size=(30, 64))
    y = np.arange(30) % 3
    for l2 in (1e-4, 1e-1):
        w1, b1 = linear_probe.fit_softmax(x, y, 3, l2, steps=200)
        w2, b2 = probe.fit_softmax_gram(x, y, 3, l2, steps=200)
        np.testing.assert_allclose(w2, w1, atol=1e-10)
        np.testing.assert_allclose(b2, b1, atol=1e-10)


def test_without_a_mirror_it_clones_the_pinned_commit(mirror, built, tmp_path):
    """The network path: no mirror, so `git clone --bare` of the recorded URL (here a local
    path standing in for GitHub) into ROOT/.git/, read at the same commit, same split."""
    mirrors, commit, _ = mirror
    _, info, _, _, _ = built
    ds = dataclasses.replace(_ds(commit), url=os.path.join(mirrors, "owner+pets", "repo"))
    empty = tmp_path / "no-mirrors"
    empty.mkdir()
    got = datasets.build(ds, str(tmp_path / "root"), mirrors=str(empty), log=lambda *a: None)
    assert got["read_from"] == "clone" and got["commit"] == commit
    assert os.path.isdir(tmp_path / "root" / ".git" / "owner+pets")
    assert got["files"] == info["files"] and got["train"] == info["train"]

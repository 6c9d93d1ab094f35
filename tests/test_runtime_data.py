"""tftl.runtime.data on real flowers5 images and on hand-made edge cases."""

import io
import os
import pathlib

import numpy as np
import pytest
from PIL import Image

from tftl.runtime import data
from tftl.runtime.progress import Progress

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED = pathlib.Path(os.environ.get("TFTL_SHARED", REPO.parent / "shared"))
FLOWERS = SHARED / "data" / "flowers5"
CLASSES = ["daisy", "dandelion", "roses", "sunflowers", "tulips"]

needs_flowers = pytest.mark.skipif(
    not (FLOWERS / "train").is_dir(),
    reason=f"flowers5 not found at {FLOWERS} (set TFTL_SHARED to the folder holding data/flowers5)",
)


def first_jpeg():
    return sorted((FLOWERS / "train" / "daisy").glob("*.jpg"))[0]


def save(img, path, **kwargs):
    img.save(path, **kwargs)
    return path


def half_red(width, height):
    """Left half red, right half blue."""
    arr = np.zeros((height, width, 3), np.uint8)
    arr[:, : width // 2] = (255, 0, 0)
    arr[:, width // 2 :] = (0, 0, 255)
    return Image.fromarray(arr)


def is_red(pixels):
    return pixels[..., 0].mean() > 180 and pixels[..., 2].mean() < 75


def is_blue(pixels):
    return pixels[..., 2].mean() > 180 and pixels[..., 0].mean() < 75


# --- load_image ---------------------------------------------------------------------------


@needs_flowers
def test_load_image_real_jpeg_is_deterministic():
    path = first_jpeg()
    a = data.load_image(path, 224)
    b = data.load_image(str(path), 224)
    assert a.shape == (224, 224, 3) and a.dtype == np.float32
    assert 0.0 <= a.min() and a.max() <= 255.0 and a.std() > 10
    np.testing.assert_array_equal(a, b)


@needs_flowers
def test_eval_path_is_resize_shorter_side_then_center_crop():
    path = first_jpeg()
    img = Image.open(path).convert("RGB")
    w, h = img.size
    s = 224 / min(w, h)
    resized = img.resize((round(w * s), round(h * s)), Image.Resampling.BILINEAR)
    left, top = (resized.width - 224) // 2, (resized.height - 224) // 2
    expected = np.asarray(resized.crop((left, top, left + 224, top + 224)), np.float32)
    got = data.load_image(path, 224)
    # Same pipeline up to sub-pixel rounding of the crop offset.
    assert np.abs(got - expected).mean() < 6


@needs_flowers
def test_augment_is_random_but_reproducible():
    path = first_jpeg()
    a = data.load_image(path, 160, augment=np.random.default_rng(1))
    b = data.load_image(path, 160, augment=np.random.default_rng(1))
    c = data.load_image(path, 160, augment=np.random.default_rng(2))
    assert a.shape == (160, 160, 3) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert not np.array_equal(a, data.load_image(path, 160))


def test_augment_flips_about_half_the_time(tmp_path):
    path = save(half_red(64, 64), tmp_path / "h.png")
    rng = np.random.default_rng(0)
    flips = 0
    for _ in range(200):
        out = data.load_image(path, 32, augment=rng)
        # With a scale >= 0.25 crop the left edge is red unless flipped (or fully blue).
        flips += is_blue(out[:, :2]) and not is_blue(out[:, -2:])
    assert 40 < flips < 140


def test_random_resized_crop_box_matches_torchvision_rules():
    rng = np.random.default_rng(0)
    for _ in range(300):
        left, top, right, bottom = data.random_resized_crop_box(320, 240, rng)
        w, h = right - left, bottom - top
        assert 0 <= left and 0 <= top and right <= 320 and bottom <= 240
        assert 0.25 * 320 * 240 * 0.95 <= w * h <= 320 * 240
        assert 3 / 4 * 0.95 <= w / h <= 4 / 3 * 1.05
    # A very wide image cannot fit the sampled boxes: fall back to a centred 4:3 crop.
    assert data.random_resized_crop_box(1000, 10, np.random.default_rng(0)) == (493, 0, 506, 10)
    assert data.center_crop_box(300, 200) == (50.0, 0.0, 250.0, 200.0)


@pytest.mark.parametrize("size", [(1200, 900), (60, 40)])
def test_exif_orientation_is_respected(tmp_path, size):
    # Stored left-red; orientation 6 means "rotate 90 degrees clockwise to display".
    img = half_red(*size)
    exif = Image.Exif()
    exif[0x0112] = 6
    path = save(img, tmp_path / "rot.jpg", exif=exif.tobytes(), quality=95)
    out = data.load_image(path, 32)
    assert is_red(out[:10]) and is_blue(out[-10:])  # red on top, blue at the bottom
    plain = data.load_image(save(img, tmp_path / "plain.jpg", quality=95), 32)
    assert is_red(plain[:, :10]) and is_blue(plain[:, -10:])


def test_jpeg_draft_decode_matches_full_decode(tmp_path):
    rng = np.random.default_rng(0)
    arr = np.kron(rng.integers(0, 255, (30, 40, 3)), np.ones((40, 40, 1))).astype(np.uint8)
    path = save(Image.fromarray(arr), tmp_path / "big.jpg", quality=95)  # 1600 x 1200
    got = data.load_image(path, 64)
    full = Image.open(path).convert("RGB").resize((64, 64), Image.Resampling.BILINEAR, box=(200, 0, 1400, 1200))
    assert np.abs(got - np.asarray(full, np.float32)).mean() < 3


@pytest.mark.parametrize("mode", ["RGBA", "LA", "L", "P", "CMYK", "I;16"])
def test_modes_convert_to_rgb(tmp_path, mode):
    img = half_red(40, 30).convert(mode) if mode != "I;16" else Image.new("I;16", (40, 30), 200)
    ext = ".jpg" if mode == "CMYK" else ".png"
    out = data.load_image(save(img, tmp_path / f"img{ext}"), 16)
    assert out.shape == (16, 16, 3) and out.dtype == np.float32
    assert 0 <= out.min() and out.max() <= 255


def test_png_alpha_and_grayscale_values(tmp_path):
    rgba = Image.new("RGBA", (20, 20), (10, 200, 30, 128))
    np.testing.assert_array_equal(data.load_image(save(rgba, tmp_path / "a.png"), 8)[0, 0], [10, 200, 30])
    gray = Image.new("L", (20, 20), 77)
    np.testing.assert_array_equal(data.load_image(save(gray, tmp_path / "g.png"), 8), np.full((8, 8, 3), 77.0))


@needs_flowers
def test_corrupt_and_truncated_files_raise_image_error(tmp_path):
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    truncated = tmp_path / "cut.jpg"
    truncated.write_bytes(first_jpeg().read_bytes()[:3000])
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    for path in (junk, truncated, empty, tmp_path / "missing.jpg"):
        with pytest.raises(data.ImageError, match=r"cannot read image \(") as info:
            data.load_image(path, 224)
        assert str(info.value).startswith(f"{path}: ")
        assert isinstance(info.value, ValueError) and info.value.path == str(path)


def test_bad_size_is_refused(tmp_path):
    path = save(half_red(8, 8), tmp_path / "x.png")
    for size in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="positive integer"):
            data.load_image(path, size)


# --- ImageFolder --------------------------------------------------------------------------


@needs_flowers
def test_image_folder_on_flowers5():
    folder = data.ImageFolder(FLOWERS / "train")
    assert folder.classes == CLASSES
    assert len(folder) == 400
    assert folder.counts() == {c: 80 for c in CLASSES}
    assert all(data.is_image_file(p) and os.path.isfile(p) for p, _ in folder.samples)
    assert [label for _, label in folder.samples] == sorted(label for _, label in folder.samples)
    assert folder.samples == data.ImageFolder(str(FLOWERS / "train")).samples


@needs_flowers
def test_image_folder_maps_onto_model_labels():
    labels = ["tulips", "roses", "extra", "daisy", "dandelion", "sunflowers"]
    folder = data.ImageFolder(FLOWERS / "val", labels=labels)
    assert folder.classes == labels
    assert folder.counts() == {"tulips": 40, "roses": 40, "extra": 0, "daisy": 40, "dandelion": 40, "sunflowers": 40}
    for path, label in folder.samples:
        assert pathlib.Path(path).parent.name == labels[label]
    with pytest.raises(ValueError, match=r"folders \['sunflowers', 'tulips'\] are not labels of the model"):
        data.ImageFolder(FLOWERS / "val", labels=["daisy", "dandelion", "roses"])


def make_tree(root, spec):
    for rel in spec:
        p = root / rel
        if rel.endswith("/"):
            p.mkdir(parents=True, exist_ok=True)
        else:
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(b"x")
    return root


def test_image_folder_layout_rules(tmp_path):
    root = make_tree(
        tmp_path / "ds",
        ["b/2.JPG", "b/sub/1.png", "b/notes.txt", "b/.hidden.jpg", "a/x.jpeg", ".git/c.jpg", "readme.md", "c/z.webp"],
    )
    folder = data.ImageFolder(root)
    assert folder.classes == ["a", "b", "c"]
    assert [os.path.relpath(p, root) for p, _ in folder.samples] == ["a/x.jpeg", "b/2.JPG", "b/sub/1.png", "c/z.webp"]
    assert [label for _, label in folder.samples] == [0, 1, 1, 2]


def test_image_folder_errors(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        data.ImageFolder(tmp_path / "nope")
    make_tree(tmp_path, ["file.jpg"])
    with pytest.raises(ValueError, match="is not a directory"):
        data.ImageFolder(tmp_path / "file.jpg")
    with pytest.raises(ValueError, match="put one folder per class in"):
        data.ImageFolder(make_tree(tmp_path / "flat", ["1.jpg", "2.jpg"]))
    with pytest.raises(ValueError, match="no images"):
        data.ImageFolder(make_tree(tmp_path / "noimg", ["a/readme.txt", "b/"]))
    with pytest.raises(ValueError, match=r"class folder .*empty_class has no images"):
        data.ImageFolder(make_tree(tmp_path / "one_empty", ["cats/1.jpg", "empty_class/"]))
    with pytest.raises(ValueError, match="duplicates"):
        data.ImageFolder(make_tree(tmp_path / "ok", ["a/1.jpg"]), labels=["a", "a"])


@needs_flowers
def test_split_is_stratified_and_deterministic():
    folder = data.ImageFolder(FLOWERS / "train")
    train, val = folder.split(0.2, seed=3)
    assert train.counts() == {c: 64 for c in CLASSES}
    assert val.counts() == {c: 16 for c in CLASSES}
    assert train.classes == val.classes == CLASSES
    assert not set(train.samples) & set(val.samples)
    assert sorted(train.samples + val.samples) == sorted(folder.samples)
    again_train, again_val = folder.split(0.2, seed=3)
    assert again_train.samples == train.samples and again_val.samples == val.samples
    assert folder.split(0.2, seed=4)[1].samples != val.samples
    with pytest.raises(ValueError, match="between 0 and 1"):
        folder.split(1.0)


def test_split_keeps_both_sides_of_tiny_classes(tmp_path):
    folder = data.ImageFolder(make_tree(tmp_path, ["a/1.jpg", "a/2.jpg", "b/1.jpg", "b/2.jpg", "b/3.jpg"]))
    train, val = folder.split(0.1, seed=0)
    assert train.counts() == {"a": 1, "b": 2} and val.counts() == {"a": 1, "b": 1}


# --- iterate_batches ----------------------------------------------------------------------


def colour_samples(tmp_path, n):
    """n tiny PNGs whose pixel value encodes their index."""
    samples = []
    for i in range(n):
        path = save(Image.new("RGB", (12, 10), (i, i, i)), tmp_path / f"{i:03d}.png")
        samples.append((str(path), i % 3))
    return samples


def test_iterate_batches_shapes_and_partial_batch(tmp_path):
    samples = colour_samples(tmp_path, 10)
    batches = list(data.iterate_batches(samples, 8, 4))
    assert [len(b[1]) for b in batches] == [4, 4, 2]
    images, labels, paths = batches[0]
    assert images.shape == (4, 8, 8, 3) and images.dtype == np.float32
    assert labels.dtype == np.int32 and labels.tolist() == [0, 1, 2, 0]
    assert paths == [s[0] for s in samples[:4]]
    np.testing.assert_array_equal(images[:, 0, 0, 0], [0, 1, 2, 3])
    assert [len(b[1]) for b in data.iterate_batches(samples, 8, 4, drop_last=True)] == [4, 4]


def test_iterate_batches_shuffle_and_augment_are_seeded_and_thread_independent(tmp_path):
    samples = colour_samples(tmp_path, 11)

    def run(threads, seed=0):
        out = data.iterate_batches(
            samples,
            8,
            3,
            shuffle_rng=np.random.default_rng(seed),
            augment_rng=np.random.default_rng(seed + 100),
            threads=threads,
        )
        return [(im.copy(), lb.copy(), p) for im, lb, p in out]

    one, four = run(1), run(4)
    order = [p for _, _, ps in one for p in ps]
    assert sorted(order) == [s[0] for s in samples] and order != [s[0] for s in samples]
    for (a, la, pa), (b, lb, pb) in zip(one, four, strict=True):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(la, lb)
        assert pa == pb
    assert [p for _, _, ps in run(1, seed=1) for p in ps] != order


@needs_flowers
def test_iterate_batches_skips_bad_images_and_refills(tmp_path):
    real = sorted((FLOWERS / "train" / "roses").glob("*.jpg"))[:5]
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(os.urandom(2048))
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(real[0].read_bytes()[:2500])
    samples = [(str(real[0]), 2), (str(junk), 2), (str(real[1]), 2), (str(cut), 2)] + [(str(p), 2) for p in real[2:]]
    skipped = []
    batches = list(data.iterate_batches(samples, 64, 2, skipped=skipped, threads=2))
    paths = [p for _, _, ps in batches for p in ps]
    assert [len(b[1]) for b in batches] == [2, 2, 1]  # refilled: 5 good images in 2 + 2 + 1
    assert paths == [str(p) for p in real]
    assert [p for p, _ in skipped] == [str(junk), str(cut)]
    assert all(isinstance(reason, str) and reason for _, reason in skipped)
    # Without a list the bad images are still skipped silently.
    assert sum(len(b[1]) for b in data.iterate_batches(samples, 64, 4)) == 5


def test_iterate_batches_accepts_image_folder_and_checks_arguments(tmp_path):
    for i in range(3):
        (tmp_path / "c").mkdir(exist_ok=True)
        save(Image.new("RGB", (9, 9), (i, 0, 0)), tmp_path / "c" / f"{i}.png")
    folder = data.ImageFolder(tmp_path)
    assert sum(len(lb) for _, lb, _ in data.iterate_batches(folder, 4, 2)) == 3
    with pytest.raises(ValueError, match="batch_size"):
        next(data.iterate_batches(folder, 4, 0))


# --- progress (device-side helper used by the trainers) -----------------------------------


def test_progress_non_tty_prints_about_every_tenth():
    stream = io.StringIO()
    with Progress(50, desc="train", stream=stream, tty=False) as bar:
        for _ in range(50):
            bar.update(loss=0.5, acc=0.75, **{"img/s": 12.0})
    lines = stream.getvalue().splitlines()
    assert 10 <= len(lines) <= 12
    assert "\r" not in stream.getvalue()
    assert lines[-1].startswith("train  50/50") and "100%" in lines[-1]
    assert "loss 0.5" in lines[-1] and "acc 0.75" in lines[-1] and "img/s 12" in lines[-1]
    assert "ETA" in lines[0]


def test_progress_tty_redraws_one_line():
    stream = io.StringIO()
    with Progress(5, stream=stream, tty=True, min_interval=0) as bar:
        for i in range(5):
            bar.update(i + 1, loss=1.0 / (i + 1))
    text = stream.getvalue()
    assert text.count("\n") == 1 and text.endswith("\n") and text.count("\r") >= 5
    assert "5/5" in text.rsplit("\r", 1)[-1]

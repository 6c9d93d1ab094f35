"""The README's main job in one command: export mbv2 (MobileTL-3, ImageNet weights) to a
trainable .tflite, fine-tune it on five flower classes with the device trainer (LiteRT, no
TensorFlow in the loop) and evaluate the fine-tuned model.

    python -m tftl.quickstart [--out quickstart_out] [--prepare-only]

Data, first found wins:
  1. the reference folder $TFTL_SHARED or <repo>/../shared (weights/ and data/flowers5/):
     nothing is downloaded, so this works offline;
  2. the download cache ($TFTL_CACHE, else $XDG_CACHE_HOME/tftl or ~/.cache/tftl), filled
     on the first online run: the public tf_flowers archive (the one TFDS uses, checked
     against TFDS' recorded size and sha256) cut into flowers5 (5 classes, 80 train and 40
     val photos each), and Keras' MobileNetV2 ImageNet weights through `keras.utils.get_file`
     (Keras' own cache and progress bar).
Offline with neither, it prints one line that says what to do and exits with status 2.
"""

import argparse
import hashlib
import os
import shutil
import sys
import tarfile
import time
import urllib.error
import urllib.request

FLOWERS_URL = ("https://storage.googleapis.com/download.tensorflow.org/example_images/"
               "flower_photos.tgz")
# tensorflow/datasets, tensorflow_datasets/url_checksums/tf_flowers.txt (the same archive)
FLOWERS_SIZE = 228_813_984
FLOWERS_SHA256 = "4c54ace7911aaffe13a365c34f650e71dd5bf1be0a58b464e5a7183e3e595d9c"
CLASSES = ("daisy", "dandelion", "roses", "sunflowers", "tulips")
TRAIN_PER_CLASS, VAL_PER_CLASS = 80, 40
MAX_PHOTO_BYTES = 16 << 20  # bound what one archive member can make us write
MBV2_FILE = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"


class DownloadError(RuntimeError):
    """A download failed or its bytes are not the expected ones (one-line message)."""


def shared_dir() -> str:
    """The reference folder: $TFTL_SHARED or <repo>/../shared (may not exist)."""
    return os.environ.get("TFTL_SHARED") or os.path.join(
        os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared")


def cache_dir() -> str:
    """Where downloads are kept: $TFTL_CACHE, else $XDG_CACHE_HOME/tftl or ~/.cache/tftl."""
    if os.environ.get("TFTL_CACHE"):
        return os.environ["TFTL_CACHE"]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "tftl")


# ----------------------------------------------------------------------------- download

class _Progress:
    """A one-line progress bar on a text stream, redrawn at most 10 times a second."""

    def __init__(self, stream, label, total):
        self.stream, self.label, self.total, self.last = stream, label, total, 0.0

    def update(self, done, final=False):
        if self.stream is None or (not final and time.monotonic() - self.last < 0.1):
            return
        self.last = time.monotonic()
        if self.total:
            filled = int(30 * done / self.total)
            bar = f"[{'#' * filled}{'.' * (30 - filled)}] {done / 1e6:.1f}/{self.total / 1e6:.1f} MB"
        else:
            bar = f"{done / 1e6:.1f} MB"
        self.stream.write(f"\r{self.label} {bar}" + ("\n" if final else ""))
        self.stream.flush()


def _check(path, size, sha256):
    """None if the file has the expected size and sha256 (either may be None), else why not."""
    got = os.path.getsize(path)
    if size is not None and got != size:
        return f"{got} bytes, expected {size}"
    if sha256 is not None:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        if h.hexdigest() != sha256:
            return f"sha256 {h.hexdigest()[:12]}..., expected {sha256[:12]}..."
    return None


def download(url, path, *, size=None, sha256=None, progress=sys.stderr, timeout=30) -> str:
    """Fetches `url` (http, https or file) to `path` once; later calls reuse the file.

    The bytes stream to `path`.part and are renamed only after the size and sha256 match, so
    a cut or altered download never stands in the cache; more than `size` bytes stops it.

    Raises:
        DownloadError: offline, an HTTP error, or the bytes are not the expected ones.
    """
    if os.path.exists(path) and _check(path, size, sha256) is None:
        return path
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    part = f"{path}.part"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp, open(part, "wb") as f:
            total = size or int(resp.headers.get("Content-Length") or 0)
            bar, done = _Progress(progress, os.path.basename(path), total), 0
            for block in iter(lambda: resp.read(1 << 20), b""):
                done += len(block)
                if size is not None and done > size:
                    raise DownloadError(f"{url} sent more than the expected {size} bytes")
                f.write(block)
                bar.update(done)
            bar.update(done, final=True)
        bad = _check(part, size, sha256)
        if bad:
            raise DownloadError(f"{url} gave a different file ({bad}); retry, or fetch it by "
                                f"hand to {path}")
        os.replace(part, path)
        return path
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", None) or e
        raise DownloadError(f"cannot download {url}: {reason}") from None
    finally:
        if os.path.exists(part):
            os.remove(part)


# ----------------------------------------------------------------------------- data

def _members_by_class(tar):
    """{class: [jpeg members, sorted by name]} of the archive's five class folders."""
    out = {c: [] for c in CLASSES}
    for m in tar.getmembers():
        parts = m.name.split("/")
        if (m.isfile() and len(parts) == 3 and parts[1] in out
                and parts[2].lower().endswith(".jpg") and 0 < m.size <= MAX_PHOTO_BYTES):
            out[parts[1]].append(m)
    for c, ms in out.items():
        ms.sort(key=lambda m: m.name)
        if len(ms) < TRAIN_PER_CLASS + VAL_PER_CLASS:
            raise DownloadError(f"the flowers archive has {len(ms)} {c} photos, expected at "
                                f"least {TRAIN_PER_CLASS + VAL_PER_CLASS}")
    return out


def flowers5_from_archive(archive, dest) -> str:
    """Cuts flowers5 (first 80 / next 40 photos of each class, by name) out of the archive.

    Only the chosen photos are written, under their base names (no path from the archive
    is trusted); the folder appears atomically.
    """
    if os.path.isdir(dest):
        return dest
    tmp = f"{dest}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    with tarfile.open(archive, "r:gz") as tar:
        for c, members in _members_by_class(tar).items():
            for split, chosen in (("train", members[:TRAIN_PER_CLASS]),
                                  ("val", members[TRAIN_PER_CLASS:TRAIN_PER_CLASS + VAL_PER_CLASS])):
                os.makedirs(os.path.join(tmp, split, c))
                for m in chosen:
                    with tar.extractfile(m) as src, \
                            open(os.path.join(tmp, split, c, os.path.basename(m.name)), "wb") as dst:
                        shutil.copyfileobj(src, dst)
    os.replace(tmp, dest)
    return dest


def find_flowers(progress=sys.stderr) -> str:
    """flowers5 from the reference folder, else the cache, else downloaded (see module doc)."""
    seeded = os.path.join(shared_dir(), "data", "flowers5")
    if os.path.isdir(seeded):
        return seeded
    cached = os.path.join(cache_dir(), "flowers5")
    if os.path.isdir(cached):
        return cached
    archive = download(FLOWERS_URL, os.path.join(cache_dir(), "flower_photos.tgz"),
                       size=FLOWERS_SIZE, sha256=FLOWERS_SHA256, progress=progress)
    return flowers5_from_archive(archive, cached)


def find_weights():
    """MobileNetV2 ImageNet weights: the reference copy, else Keras' download and cache."""
    seeded = os.path.join(shared_dir(), "weights", MBV2_FILE)
    if os.path.exists(seeded):
        return seeded
    from tftl import models  # Keras: get_file caches in $KERAS_HOME/models, with a bar
    return models.imagenet_weights_path("mbv2", 224)


# ----------------------------------------------------------------------------- main

def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m tftl.quickstart", description=__doc__.split("\n")[0])
    p.add_argument("--out", default="quickstart_out", help="folder for the models and history")
    p.add_argument("--prepare-only", action="store_true",
                   help="only find or download the data and weights, then exit")
    a = p.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        flowers = find_flowers()
        weights = find_weights()
    except (DownloadError, FileNotFoundError) as e:
        print(f"error: {e}. Connect to the internet once (downloads are cached in "
              f"{cache_dir()}) or set TFTL_SHARED to a folder holding weights/{MBV2_FILE} "
              f"and data/flowers5/", file=sys.stderr)
        return 2
    print(f"data {flowers}\nweights {weights}")
    if a.prepare_only:
        return 0
    return _run(os.path.abspath(a.out), flowers, weights)


def _run(out, flowers, weights):
    """Export, fine-tune on flowers5/train, evaluate on flowers5/val."""
    os.makedirs(out, exist_ok=True)
    from converters import export
    model_path = os.path.join(out, "mbv2_mobiletl3.tflite")
    labels = sorted(d for d in os.listdir(os.path.join(flowers, "train")) if not d.startswith("."))
    r = export.export("mbv2", scheme="mobiletl", blocks=3, labels=labels, weights=weights,
                      output=model_path, log=lambda s: print(s, file=sys.stderr))
    print(f"exported {r.path} ({r.size_bytes / 1e6:.1f} MB, {r.trainable_params:,} trainable)")
    from tftl.runtime import cli
    tuned = os.path.join(out, "mbv2_flowers5.tflite")
    rc = cli.train_main([model_path, os.path.join(flowers, "train"),
                         "--val", os.path.join(flowers, "val"), "--output", tuned,
                         "--history", os.path.join(out, "history.json"),
                         "--overwrite"])  # the model was just exported again: start over
    if rc:
        return rc
    return cli.eval_main([tuned, os.path.join(flowers, "val")])


if __name__ == "__main__":
    sys.exit(main())

"""The one image preprocessing definition, shared by the Keras trainer and the device trainer.

Both sides call `load_image`, so a model fine-tuned on the device sees exactly the pixels
it saw on the desktop. Output is float32 RGB in 0..255 (models do their own rescaling).

  eval:    shorter side resized to `size` (bilinear), centre crop size x size.
  augment: random resized crop (area 0.25..1, aspect 3/4..4/3, as torchvision's
           RandomResizedCrop), resized to size x size, random horizontal flip (p = 0.5).

No TensorFlow here: numpy, Pillow and the standard library only.
"""

import concurrent.futures
import math
import os
import struct

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")

CROP_SCALE = (0.25, 1.0)
CROP_RATIO = (3 / 4, 4 / 3)
CROP_ATTEMPTS = 10

# Everything Pillow raises for a bad file: unknown format, truncated data, broken headers.
_DECODE_ERRORS = (
    UnidentifiedImageError,
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    struct.error,
    Image.DecompressionBombError,
)
# EXIF orientations that swap width and height (transpose / rotate 90 / 270).
_SWAPPING_ORIENTATIONS = (5, 6, 7, 8)


class ImageError(ValueError):
    """An image file that cannot be decoded; callers skip it rather than crash a run."""

    def __init__(self, path, reason):
        self.path = str(path)
        self.reason = str(reason)
        super().__init__(f"{self.path}: cannot read image ({self.reason})")

    def __reduce__(self):
        return type(self), (self.path, self.reason)


def is_image_file(path) -> bool:
    """True when the file name has one of IMAGE_EXTENSIONS (case-insensitive)."""
    return os.path.splitext(str(path))[1].lower() in IMAGE_EXTENSIONS


def center_crop_box(width: int, height: int) -> tuple:
    """The centred square (left, top, right, bottom) whose side is the shorter side.

    Cropping this square and resizing it to size x size equals "resize the shorter side to
    size, then centre-crop size x size", without resizing pixels that are thrown away.
    """
    side = min(width, height)
    left = (width - side) / 2
    top = (height - side) / 2
    return (left, top, left + side, top + side)


def random_resized_crop_box(width: int, height: int, rng, *, scale=CROP_SCALE, ratio=CROP_RATIO):
    """torchvision RandomResizedCrop.get_params: a random box (left, top, right, bottom).

    Tries CROP_ATTEMPTS random (area, aspect) pairs; if none fits inside the image, falls
    back to the whole image centre-cropped to the nearest allowed aspect ratio.
    """
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(CROP_ATTEMPTS):
        target_area = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(log_ratio[0], log_ratio[1]))
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            return (left, top, left + w, top + h)
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        w, h = int(round(height * ratio[1])), height
    else:
        w, h = width, height
    top = (height - h) // 2
    left = (width - w) // 2
    return (left, top, left + w, top + h)


def _draft_scale(box, size: int) -> int:
    """Largest JPEG DCT scale (8, 4, 2, 1) that keeps both sides of `box` >= size pixels."""
    shorter = min(box[2] - box[0], box[3] - box[1])
    for s in (8, 4, 2):
        if shorter / s >= size:
            return s
    return 1


def _choose_crop(width, height, augment):
    """(box, flip) for an upright width x height image: centre crop, or random crop + flip."""
    if augment is None:
        return center_crop_box(width, height), False
    box = random_resized_crop_box(width, height, augment)
    return box, bool(augment.random() < 0.5)


def load_image(path, size: int, *, augment=None) -> np.ndarray:
    """Decode one image file to float32 [size, size, 3] in 0..255.

    augment: None for the deterministic eval path, or a numpy Generator for the
    random-resized-crop + flip training path. Raises ImageError for any unreadable file.
    """
    if not isinstance(size, (int, np.integer)) or isinstance(size, bool) or size < 1:
        raise ValueError(f"image size must be a positive integer, got {size!r}")
    size = int(size)
    try:
        with Image.open(path) as img:
            # The crop box is chosen on the upright full-resolution image, so the random
            # draws depend only on the image's dimensions, never on the decoder.
            scale = 1
            is_jpeg = img.format == "JPEG"
            if is_jpeg:
                # JPEG EXIF sits before the image data, so the upright size is known before
                # decoding; that lets the DCT decode at 1/2, 1/4 or 1/8 scale for free, used
                # only while the crop keeps >= `size` pixels a side (nothing gets upsampled).
                width, height = img.size
                if img.getexif().get(0x0112, 1) in _SWAPPING_ORIENTATIONS:
                    width, height = height, width
                box, flip = _choose_crop(width, height, augment)
                s = _draft_scale(box, size)
                if s > 1:
                    raw_w, raw_h = img.size
                    drafted = img.draft("RGB", (raw_w // s, raw_h // s))
                    if drafted is not None:
                        scale = raw_w / drafted[1][2]
            img.load()  # force the full decode so truncated files fail here
            rgb = ImageOps.exif_transpose(img).convert("RGB")
            if not is_jpeg:
                box, flip = _choose_crop(*rgb.size, augment)
            box = tuple(min(v / scale, lim) for v, lim in zip(box, rgb.size * 2))
            out = rgb.resize((size, size), Image.Resampling.BILINEAR, box=box, reducing_gap=None)
            if flip:
                out = out.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            array = np.asarray(out, dtype=np.float32)
    except ImageError:
        raise
    except _DECODE_ERRORS as e:
        raise ImageError(path, str(e) or type(e).__name__) from e
    if array.shape != (size, size, 3):
        raise ImageError(path, f"decoded to shape {array.shape}, expected {(size, size, 3)}")
    return array


def _visible(name: str) -> bool:
    return not name.startswith(".")


def _list_images(folder: str) -> list:
    """Image files under `folder` (recursive, hidden entries skipped), sorted by relative path."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if _visible(d)]
        for name in filenames:
            if _visible(name) and is_image_file(name):
                found.append(os.path.join(dirpath, name))
    return sorted(found, key=lambda p: os.path.relpath(p, folder).replace(os.sep, "/"))


class ImageFolder:
    """Images laid out as <root>/<class>/*.jpg; class indices follow the model's labels.

    Without `labels`, classes are the sorted folder names. With `labels` (the model's label
    names), each folder must name one of them and its index is the label's index, so a
    device folder holding only some classes still trains the right outputs.
    """

    def __init__(self, root, *, labels=None):
        root = os.fspath(root)
        if not os.path.exists(root):
            raise ValueError(f"image folder {root} does not exist — pass a folder holding one subfolder per class")
        if not os.path.isdir(root):
            raise ValueError(f"image folder {root} is not a directory — pass a folder of one subfolder per class")
        folders = sorted(
            name for name in os.listdir(root) if _visible(name) and os.path.isdir(os.path.join(root, name))
        )
        if not folders:
            raise ValueError(f"{root} has no class subfolders — put one folder per class in {root}")
        files = {name: _list_images(os.path.join(root, name)) for name in folders}
        if not any(files.values()):
            exts = "/".join(e[1:] for e in IMAGE_EXTENSIONS)
            raise ValueError(f"no images ({exts}) in the class folders of {root} — add images to them")
        empty = [name for name in folders if not files[name]]
        if empty:
            raise ValueError(
                f"class folder {os.path.join(root, empty[0])} has no images — add some or remove the folder"
            )
        if labels is None:
            classes = folders
        else:
            classes = [str(label) for label in labels]
            if len(set(classes)) != len(classes):
                raise ValueError(f"labels {classes} contain duplicates — each label must be unique")
            unknown = [name for name in folders if name not in classes]
            if unknown:
                raise ValueError(
                    f"{root}: folders {unknown} are not labels of the model {classes} — rename or remove them"
                )
        index = {name: i for i, name in enumerate(classes)}
        samples = [(path, index[name]) for name in folders for path in files[name]]
        self._init(root, classes, samples)

    def _init(self, root, classes, samples):
        self.root = root
        self.classes = list(classes)
        self.samples = list(samples)

    @classmethod
    def _view(cls, root, classes, samples):
        view = cls.__new__(cls)
        view._init(root, classes, samples)
        return view

    def __len__(self) -> int:
        return len(self.samples)

    def __repr__(self) -> str:
        return f"ImageFolder({self.root!r}, {len(self.classes)} classes, {len(self.samples)} images)"

    def counts(self) -> dict:
        """Images per class, in class order (0 for a label with no folder)."""
        counts = {name: 0 for name in self.classes}
        for _, label in self.samples:
            counts[self.classes[label]] += 1
        return counts

    def split(self, fraction: float, seed: int = 0):
        """(train, val) views with `fraction` of each class held out for validation.

        Stratified so every class keeps its share; deterministic for a given seed and
        folder contents. A class with >= 2 images keeps at least one on each side.
        """
        if not 0.0 < fraction < 1.0:
            raise ValueError(f"validation fraction must be between 0 and 1 (exclusive), got {fraction!r}")
        rng = np.random.default_rng(seed)
        by_class = {}
        for i, (_, label) in enumerate(self.samples):
            by_class.setdefault(label, []).append(i)
        val_idx = set()
        for label in sorted(by_class):
            idx = by_class[label]
            n = len(idx)
            n_val = int(round(n * fraction))
            if n >= 2:
                n_val = min(max(n_val, 1), n - 1)
            chosen = rng.permutation(n)[:n_val]
            val_idx.update(idx[j] for j in chosen)
        train = [s for i, s in enumerate(self.samples) if i not in val_idx]
        val = [s for i, s in enumerate(self.samples) if i in val_idx]
        return (self._view(self.root, self.classes, train), self._view(self.root, self.classes, val))


def _decode(job):
    path, label, seed, size = job
    rng = None if seed is None else np.random.default_rng(seed)
    try:
        return path, label, load_image(path, size, augment=rng), None
    except ImageError as e:
        return path, label, None, e.reason


def iterate_batches(
    samples,
    size: int,
    batch_size: int,
    *,
    shuffle_rng=None,
    augment_rng=None,
    drop_last: bool = False,
    skipped=None,
    threads: int = 1,
):
    """Yield (images float32 [B,size,size,3], labels int32 [B], paths) batches, streaming.

    Decodes one batch at a time (with `threads` decode workers), so memory stays at one
    batch whatever the data set size. A corrupt image is skipped, appended to `skipped` as
    (path, reason), and its slot refilled from the following samples. Each image's
    augmentation seed is drawn from `augment_rng` in sample order, so results do not depend
    on `threads`. The last partial batch is yielded unless drop_last.
    `samples`: a list of (path, label) or an ImageFolder.
    """
    samples = getattr(samples, "samples", samples)
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads!r}")
    order = shuffle_rng.permutation(len(samples)) if shuffle_rng is not None else range(len(samples))
    order = iter(order)
    pool = concurrent.futures.ThreadPoolExecutor(threads) if threads > 1 else None
    run = pool.map if pool is not None else map
    try:
        exhausted = False
        while not exhausted:
            images, labels, paths = [], [], []
            while len(images) < batch_size and not exhausted:
                jobs = []
                for _ in range(batch_size - len(images)):
                    i = next(order, None)
                    if i is None:
                        exhausted = True
                        break
                    path, label = samples[int(i)]
                    seed = None if augment_rng is None else int(augment_rng.integers(0, 2**63 - 1))
                    jobs.append((path, label, seed, size))
                for path, label, image, reason in run(_decode, jobs):
                    if image is None:
                        if skipped is not None:
                            skipped.append((path, reason))
                        continue
                    images.append(image)
                    labels.append(label)
                    paths.append(path)
            if images and (len(images) == batch_size or not drop_last):
                yield np.stack(images), np.asarray(labels, dtype=np.int32), paths
    finally:
        if pool is not None:
            pool.shutdown(wait=True)

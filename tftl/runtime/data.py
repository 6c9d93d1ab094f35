"""The one image preprocessing definition, shared by the Keras trainer and the device trainer.

Both sides call `load_image`, so a model fine-tuned on the device sees exactly the pixels
it saw on the desktop. Output is float32 RGB in 0..255 (models do their own rescaling).

  eval:    shorter side resized to `size` (bilinear), centre crop size x size.
  augment: random resized crop (area 0.25..1, aspect 3/4..4/3, as torchvision's
           RandomResizedCrop), resized to size x size, random horizontal flip (p = 0.5).

Hostile or damaged files (all checked before the pixels are decoded): only regular
files are opened (a FIFO named x.jpg would block forever, /dev/zero never ends); only
the JPEG, PNG, BMP and WebP decoders are tried, whatever the name says; an image whose
decoded size is over MAX_DECODED_PIXELS is refused from its header (a 20 KB PNG can
declare 13000 x 13000 pixels), while JPEGs up to MAX_SOURCE_PIXELS decode at 1/2..1/8
scale through Pillow's draft; EXIF that does not parse counts as "upright"; 16-bit
grayscale is scaled to 0..255 (Pillow's convert clips it). Any failure is an ImageError
that the callers count and list as a skipped file.

No TensorFlow here: numpy, Pillow and the standard library only.
"""

import concurrent.futures
import math
import os
import warnings

import numpy as np
from PIL import BmpImagePlugin, Image, JpegImagePlugin, PngImagePlugin, UnidentifiedImageError  # noqa: F401
from PIL import WebPImagePlugin  # noqa: F401  (registers the decoder IMAGE_FORMATS names)

from tftl.runtime import contract, files
from tftl.runtime.errors import InputError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
# The decoders tried, whatever the file is named (Pillow would otherwise also try TIFF,
# PSD, EPS (which runs Ghostscript) and dozens more on a renamed file).
# The JPEG decoder also opens MPO (a phone JPEG with extra frames) as format "MPO".
IMAGE_FORMATS = ("JPEG", "PNG", "BMP", "WEBP")
# Decoded pixels a single image may need (about 100 MB as RGB). JPEGs are decoded at
# 1/2..1/8 scale when the crop allows, so this limits the drafted size, not the photo's.
MAX_DECODED_PIXELS = 1 << 25
# Largest declared size at all (a 268 MP JPEG still drafts to 4 MP). Pillow refuses at
# twice its MAX_IMAGE_PIXELS and warns above it; the warning is made an error (a skip).
MAX_SOURCE_PIXELS = 1 << 28
Image.MAX_IMAGE_PIXELS = MAX_SOURCE_PIXELS
warnings.filterwarnings("error", category=Image.DecompressionBombWarning)
# A damaged EXIF block (parsed by the TIFF plugin) is treated as "upright"; its warnings
# would only be noise among the progress lines.
warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.TiffImagePlugin")

CROP_SCALE = (0.25, 1.0)
CROP_RATIO = (3 / 4, 4 / 3)
CROP_ATTEMPTS = 10

# EXIF orientations that swap width and height (transpose / rotate 90 / 270).
_SWAPPING_ORIENTATIONS = (5, 6, 7, 8)
# EXIF orientation -> the transpose that makes the image upright (as ImageOps.exif_transpose).
_UPRIGHT = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
            4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
            6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE, 8: Image.Transpose.ROTATE_90}
_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N")


class ImageError(InputError):
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


def _orientation(img) -> int:
    """The EXIF orientation 1..8; 1 (upright) when the EXIF block is missing or damaged.

    A one-bit error in a phone's EXIF block can make Pillow's parser raise almost
    anything (struct.error, SyntaxError, TypeError, ...); the pixels are still fine.
    """
    try:
        value = img.getexif().get(0x0112, 1)
    except Exception:  # noqa: BLE001 - any parser failure means "no usable orientation"
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _to_rgb(img):
    """`img` as 8-bit RGB; 16-bit grayscale scaled by 255/65535 instead of clipped at 255."""
    if img.mode in _SIXTEEN_BIT or (img.mode == "I" and img.format == "PNG"):
        wide = np.asarray(img).astype(np.uint32)
        gray = ((np.clip(wide, 0, 65535) * 255 + 32767) // 65535).astype(np.uint8)
        return Image.fromarray(gray, "L").convert("RGB")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")  # the palette with its transparency; the alpha is dropped next
    return img.convert("RGB")


def _check_budget(img) -> None:
    """Refuse an image whose (drafted) size needs more than MAX_DECODED_PIXELS, undecoded."""
    if img.size[0] * img.size[1] > MAX_DECODED_PIXELS:
        raise _TooLarge(f"{img.size[0]} x {img.size[1]} pixels to decode, more than the "
                        f"{MAX_DECODED_PIXELS / 1e6:.0f} MP this loader accepts — resize it")


def _decode_file(f, size: int, augment):
    """(array [size, size, 3] float32) of the open image file `f`; raises on any problem."""
    with Image.open(f, formats=IMAGE_FORMATS) as img:
        # The crop box is chosen on the upright full-resolution image, so the random
        # draws depend only on the image's dimensions, never on the decoder.
        scale = 1
        if img.size[0] * img.size[1] > MAX_SOURCE_PIXELS:
            raise _TooLarge(f"{img.size[0]} x {img.size[1]} pixels, more than the "
                            f"{MAX_SOURCE_PIXELS / 1e6:.0f} MP this loader accepts — resize it")
        is_jpeg = img.format in ("JPEG", "MPO")  # MPO: a phone JPEG with extra frames
        if not is_jpeg:
            _check_budget(img)  # before getexif: a PNG's getexif decodes the whole image
        orientation = _orientation(img)
        if is_jpeg:
            # JPEG EXIF sits before the image data, so the upright size is known before
            # decoding; that lets the DCT decode at 1/2, 1/4 or 1/8 scale for free, used
            # only while the crop keeps >= `size` pixels a side (nothing gets upsampled).
            width, height = img.size
            if orientation in _SWAPPING_ORIENTATIONS:
                width, height = height, width
            box, flip = _choose_crop(width, height, augment)
            s = _draft_scale(box, size)
            if s > 1:
                raw_w, raw_h = img.size
                drafted = img.draft("RGB", (raw_w // s, raw_h // s))
                if drafted is not None:
                    scale = raw_w / drafted[1][2]
            _check_budget(img)  # the drafted size
        img.load()  # force the full decode so truncated files fail here
        upright = img.transpose(_UPRIGHT[orientation]) if orientation in _UPRIGHT else img
        rgb = _to_rgb(upright)
        if not is_jpeg:
            box, flip = _choose_crop(*rgb.size, augment)
        box = tuple(min(v / scale, lim) for v, lim in zip(box, rgb.size * 2))
        out = rgb.resize((size, size), Image.Resampling.BILINEAR, box=box, reducing_gap=None)
        if flip:
            out = out.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return np.asarray(out, dtype=np.float32)


class _TooLarge(Exception):
    """An image over the pixel budget (turned into an ImageError with its path)."""


def _folder_reason(path) -> str:
    """Why a folder in the sample list cannot be used (it is there because it cannot be listed)."""
    try:
        os.listdir(path)
    except OSError as e:
        return f"folder cannot be listed ({e.strerror or e}); the photos in it are not used"
    return "is a folder, not an image file"


def load_image(path, size: int, *, augment=None) -> np.ndarray:
    """Decode one image file to float32 [size, size, 3] in 0..255.

    augment: None for the deterministic eval path, or a numpy Generator for the
    random-resized-crop + flip training path. Raises ImageError for any file that is not
    a readable regular image file within the pixel budget, whatever its bytes are.
    """
    if not isinstance(size, (int, np.integer)) or isinstance(size, bool) or size < 1:
        raise ValueError(f"image size must be a positive integer, got {size!r}")
    size = int(size)
    try:
        f = files.open_regular(path)
    except files.FileProblem as e:
        reason = _folder_reason(path) if os.path.isdir(path) else e.reason
        raise ImageError(path, reason) from None
    try:
        with f:
            array = _decode_file(f, size, augment)
    except _TooLarge as e:
        raise ImageError(path, str(e)) from None
    except UnidentifiedImageError:
        raise ImageError(path, "not a JPEG, PNG, BMP or WebP image") from None
    except Exception as e:  # noqa: BLE001 - any bytes at all must end in "skipped", not a traceback
        message = " ".join(str(e).split())
        if not isinstance(e, (OSError, ValueError)):
            message = f"{type(e).__name__}: {message}" if message else type(e).__name__
        raise ImageError(path, message or type(e).__name__) from e
    if array.shape != (size, size, 3):
        raise ImageError(path, f"decoded to shape {array.shape}, expected {(size, size, 3)}")
    return array


def _visible(name: str) -> bool:
    return not name.startswith(".")


def _list_images(folder: str):
    """(image paths, unlistable folders) under `folder`, recursive, hidden entries skipped.

    The paths are sorted by relative path. A sub-folder that cannot be listed (permissions,
    I/O error) is returned as (path, reason) rather than silently dropped.
    """
    found, unlistable = [], []

    def onerror(e):
        unlistable.append((e.filename or folder, f"folder cannot be listed ({e.strerror or e})"))

    for dirpath, dirnames, filenames in os.walk(folder, onerror=onerror):
        dirnames[:] = [d for d in dirnames if _visible(d)]
        for name in filenames:
            if _visible(name) and is_image_file(name):
                found.append(os.path.join(dirpath, name))
    return sorted(found, key=lambda p: os.path.relpath(p, folder).replace(os.sep, "/")), unlistable


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
        try:
            names = os.listdir(root)
        except OSError as e:
            raise ValueError(f"image folder {root} cannot be listed ({e.strerror or e}) — check its permissions") from None
        folders = sorted(name for name in names if _visible(name) and os.path.isdir(os.path.join(root, name)))
        if not folders:
            raise ValueError(f"{root} has no class subfolders — put one folder per class in {root}")
        if labels is None:
            # Folder names become the model's labels: refuse now, before any listing or
            # decoding, a name no reader could load back (contract.LABEL_RULE).
            contract.check_labels(folders, where=f"class folders of {root}")
        by_class, unreadable = {}, []
        for name in folders:
            found, unlistable = _list_images(os.path.join(root, name))
            # An unlistable folder stays in the samples: load_image refuses it with the
            # reason, so every caller counts and lists it like an unreadable image.
            by_class[name] = found + [path for path, _ in unlistable]
            unreadable += unlistable
        if not any(by_class.values()):
            exts = "/".join(e[1:] for e in IMAGE_EXTENSIONS)
            raise ValueError(f"no images ({exts}) in the class folders of {root} — add images to them")
        empty = [name for name in folders if not by_class[name]]
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
        samples = [(path, index[name]) for name in folders for path in by_class[name]]
        self._init(root, classes, samples, unreadable)

    def _init(self, root, classes, samples, unreadable=()):
        self.root = root
        self.classes = list(classes)
        self.samples = list(samples)
        # (path, reason) of sub-folders that could not be listed; they are also in
        # `samples`, where load_image refuses them, so they are counted as skipped.
        self.unreadable = list(unreadable)

    @classmethod
    def _view(cls, root, classes, samples, unreadable=()):
        view = cls.__new__(cls)
        view._init(root, classes, samples, unreadable)
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
        return (self._view(self.root, self.classes, train, self.unreadable),
                self._view(self.root, self.classes, val))


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

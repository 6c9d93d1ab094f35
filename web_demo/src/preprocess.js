// Image preprocessing, as tftl/runtime/data.py's load_image: the eval path (augment=None) is the
// centred square whose side is the shorter side, resized to size x size with Pillow's BILINEAR
// filter (reducing_gap=None), RGB float32 0..255; an augmented view (the recipe's cache_views) is
// data.random_resized_crop_box's box (area 0.25..1, aspect 3/4..4/3, 10 attempts, then the
// fallback) resized the same way, flipped left-right with p = 0.5. The draws come from the page's
// seeded generator (src/random.js), not numpy's: same distributions, other numbers.
//
// The resampling is a line-by-line port of Pillow's Resample.c (precompute_coeffs,
// normalize_coeffs_8bpc, the 8-bit horizontal then vertical passes, with the same 22-bit
// fixed point and rounding), so from the same decoded pixels the output is bit-identical.
// What cannot be identical is the decode: for a JPEG, Pillow's `draft` makes libjpeg decode
// at 1/2, 1/4 or 1/8 scale (scaled IDCT); the browser only decodes at full size, so that
// reduction is emulated here by an s x s box average. tests/test_web.py measures the gap.

import { seeded, viewSeed } from './random.js';

const PRECISION_BITS = 32 - 8 - 2;
export const CROP_SCALE = [0.25, 1.0];
export const CROP_RATIO = [3 / 4, 4 / 3];
const CROP_ATTEMPTS = 10;
// Pillow refuses images over 2 x Image.MAX_IMAGE_PIXELS as decompression bombs; so does the page.
const MAX_PIXELS = 2 * 89478485;

/** The centred square (left, top, right, bottom), as data.center_crop_box. */
export function centerCropBox(width, height) {
  const side = Math.min(width, height);
  const left = (width - side) / 2;
  const top = (height - side) / 2;
  return [left, top, left + side, top + side];
}

/** Python's round(): halves to the even neighbour. */
function roundHalfEven(x) {
  const r = Math.round(x);
  return r - x === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/** data.random_resized_crop_box (torchvision's RandomResizedCrop.get_params) with rng.uniform(a, b) =
 * a + (b - a) u and rng.integers(0, n) = floor(u n), u from `rand` (floats in [0, 1)). */
export function randomResizedCropBox(width, height, rand) {
  const area = width * height;
  const logRatio = CROP_RATIO.map(Math.log);
  const uniform = (lo, hi) => lo + (hi - lo) * rand();
  for (let i = 0; i < CROP_ATTEMPTS; i++) {
    const target = area * uniform(CROP_SCALE[0], CROP_SCALE[1]);
    const aspect = Math.exp(uniform(logRatio[0], logRatio[1]));
    const w = roundHalfEven(Math.sqrt(target * aspect));
    const h = roundHalfEven(Math.sqrt(target / aspect));
    if (w > 0 && w <= width && h > 0 && h <= height) {
      const top = Math.floor(rand() * (height - h + 1));
      const left = Math.floor(rand() * (width - w + 1));
      return [left, top, left + w, top + h];
    }
  }
  const inRatio = width / height;
  let [w, h] = [width, height];
  if (inRatio < CROP_RATIO[0]) h = roundHalfEven(width / CROP_RATIO[0]);
  else if (inRatio > CROP_RATIO[1]) w = roundHalfEven(height * CROP_RATIO[1]);
  const top = Math.floor((height - h) / 2);
  const left = Math.floor((width - w) / 2);
  return [left, top, left + w, top + h];
}

/** Packed RGB rows mirrored left to right (Image.Transpose.FLIP_LEFT_RIGHT), in place. */
export function flipRgb(rgb, width, height) {
  for (let y = 0; y < height; y++) {
    for (let a = y * width, b = a + width - 1; a < b; a++, b--) {
      for (let c = 0; c < 3; c++) [rgb[a * 3 + c], rgb[b * 3 + c]] = [rgb[b * 3 + c], rgb[a * 3 + c]];
    }
  }
  return rgb;
}

/** data._draft_scale: the largest DCT scale (8, 4, 2) keeping the box's shorter side >= size. */
export function draftScale(box, size) {
  const shorter = Math.min(box[2] - box[0], box[3] - box[1]);
  for (const s of [8, 4, 2]) if (shorter / s >= size) return s;
  return 1;
}

function triangle(x) {
  x = Math.abs(x);
  return x < 1 ? 1 - x : 0;
}

/** Pillow precompute_coeffs + normalize_coeffs_8bpc for the bilinear (triangle) filter. */
function coeffs(inSize, in0, in1, outSize) {
  const scale = (in1 - in0) / outSize;
  const filterscale = Math.max(scale, 1);
  const support = 1 * filterscale;
  const ksize = Math.ceil(support) * 2 + 1;
  const kk = new Float64Array(outSize * ksize);
  const bounds = new Int32Array(outSize * 2);
  for (let xx = 0; xx < outSize; xx++) {
    const center = in0 + (xx + 0.5) * scale;
    const ss = 1 / filterscale;
    const xmin = Math.max(0, Math.trunc(center - support + 0.5));
    const xmax = Math.min(inSize, Math.trunc(center + support + 0.5)) - xmin;
    let ww = 0;
    for (let x = 0; x < xmax; x++) {
      const w = triangle((x + xmin - center + 0.5) * ss);
      kk[xx * ksize + x] = w;
      ww += w;
    }
    for (let x = 0; x < xmax; x++) if (ww !== 0) kk[xx * ksize + x] /= ww;
    bounds[xx * 2] = xmin;
    bounds[xx * 2 + 1] = xmax;
  }
  const fixed = new Int32Array(kk.length);
  for (let i = 0; i < kk.length; i++) {
    const v = kk[i] * (1 << PRECISION_BITS);
    fixed[i] = kk[i] < 0 ? Math.trunc(-0.5 + v) : Math.trunc(0.5 + v);
  }
  return { ksize, bounds, kk: fixed };
}

function clip8(v) {
  if (v >= 2 ** (PRECISION_BITS + 8)) return 255;
  if (v <= 0) return 0;
  return Math.floor(v / 2 ** PRECISION_BITS);
}

/**
 * Pillow's Image.resize((outW, outH), BILINEAR, box=box, reducing_gap=None) of an RGB image.
 * @param {Uint8Array} rgb packed RGB, width x height
 * @returns {Uint8Array} packed RGB, outW x outH
 */
export function pillowResize(rgb, width, height, outW, outH, box) {
  const needH = outW !== width || box[0] !== 0 || box[2] !== outW;
  const needV = outH !== height || box[1] !== 0 || box[3] !== outH;
  const h = coeffs(width, box[0], box[2], outW);
  const v = coeffs(height, box[1], box[3], outH);
  const yFirst = v.bounds[0];
  const yLast = v.bounds[outH * 2 - 2] + v.bounds[outH * 2 - 1];
  let src = rgb;
  let srcW = width;
  let rowOffset = 0;
  if (needH) {
    const rows = yLast - yFirst;
    const tmp = new Uint8Array(outW * rows * 3);
    for (let y = 0; y < rows; y++) {
      const inRow = (y + yFirst) * width * 3;
      for (let xx = 0; xx < outW; xx++) {
        const xmin = h.bounds[xx * 2];
        const xmax = h.bounds[xx * 2 + 1];
        const k = xx * h.ksize;
        for (let c = 0; c < 3; c++) {
          let ss = 1 << (PRECISION_BITS - 1);
          for (let x = 0; x < xmax; x++) ss += rgb[inRow + (x + xmin) * 3 + c] * h.kk[k + x];
          tmp[(y * outW + xx) * 3 + c] = clip8(ss);
        }
      }
    }
    src = tmp;
    srcW = outW;
    rowOffset = yFirst;
  }
  if (!needV) return src;
  const out = new Uint8Array(outW * outH * 3);
  for (let yy = 0; yy < outH; yy++) {
    const ymin = v.bounds[yy * 2] - rowOffset;
    const ymax = v.bounds[yy * 2 + 1];
    const k = yy * v.ksize;
    for (let xx = 0; xx < outW; xx++) {
      for (let c = 0; c < 3; c++) {
        let ss = 1 << (PRECISION_BITS - 1);
        for (let y = 0; y < ymax; y++) ss += src[((y + ymin) * srcW + xx) * 3 + c] * v.kk[k + y];
        out[(yy * outW + xx) * 3 + c] = clip8(ss);
      }
    }
  }
  return out;
}

/** An s x s box average (ceil(w/s) x ceil(h/s)): stands in for libjpeg's 1/s scaled decode. */
export function boxReduce(rgb, width, height, s) {
  const w = Math.ceil(width / s);
  const hgt = Math.ceil(height / s);
  const out = new Uint8Array(w * hgt * 3);
  for (let y = 0; y < hgt; y++) {
    const y1 = Math.min(height, (y + 1) * s);
    for (let x = 0; x < w; x++) {
      const x1 = Math.min(width, (x + 1) * s);
      for (let c = 0; c < 3; c++) {
        let sum = 0;
        for (let yy = y * s; yy < y1; yy++) for (let xx = x * s; xx < x1; xx++) sum += rgb[(yy * width + xx) * 3 + c];
        out[(y * w + x) * 3 + c] = Math.round(sum / ((y1 - y * s) * (x1 - x * s)));
      }
    }
  }
  return { rgb: out, width: w, height: hgt };
}

function isJpeg(head) {
  return head[0] === 0xff && head[1] === 0xd8 && head[2] === 0xff;
}

/** Decode a Blob to packed RGB at full size, upright, without colour management. */
export async function decodeRgb(blob) {
  const bitmap = await createImageBitmap(blob, {
    colorSpaceConversion: 'none', premultiplyAlpha: 'none', imageOrientation: 'from-image',
  });
  try {
    if (bitmap.width * bitmap.height > MAX_PIXELS) {
      throw new Error(`${bitmap.width} x ${bitmap.height} pixels is over the ${MAX_PIXELS} limit (Pillow's decompression-bomb bound)`);
    }
    const canvas = new OffscreenCanvas(bitmap.width, bitmap.height);
    const ctx = canvas.getContext('2d', { willReadFrequently: true });
    ctx.drawImage(bitmap, 0, 0);
    const rgba = ctx.getImageData(0, 0, bitmap.width, bitmap.height).data;
    const rgb = new Uint8Array(bitmap.width * bitmap.height * 3);
    for (let i = 0, j = 0; i < rgba.length; i += 4, j += 3) {
      rgb[j] = rgba[i];
      rgb[j + 1] = rgba[i + 1];
      rgb[j + 2] = rgba[i + 2];
    }
    return { rgb, width: bitmap.width, height: bitmap.height };
  } finally {
    bitmap.close();
  }
}

export const FORMAT_HINT = ' — use a JPEG, PNG, BMP or WebP file';

/** The crop `box` of a decoded image resized to size x size, with the JPEG draft scale emulated
 * (reductions cached in `reduced` by scale, so a photo's views share them). */
function cropView(img, box, size, jpeg, reduced) {
  const s = jpeg ? draftScale(box, size) : 1;
  let src = img;
  if (s > 1) {
    if (!reduced.has(s)) reduced.set(s, boxReduce(img.rgb, img.width, img.height, s));
    src = reduced.get(s);
    const lim = [src.width, src.height, src.width, src.height];
    box = box.map((b, i) => Math.min(b / s, lim[i]));
  }
  return pillowResize(src.rgb, src.width, src.height, size, size, box);
}

/**
 * One image file as the model's inputs: its centre view, then `views` augmented views (random
 * resized crop + flip, drawn from viewSeed(index, v)), each [size * size * 3] RGB 0..255.
 * @param {Blob} blob an image file (JPEG, PNG, BMP, WebP)
 * @param {number} size the model's image_size
 * @returns {Promise<Float32Array>} (1 + views) * size * size * 3 values
 * @throws {Error} "<name>: cannot read image (...)" when the browser cannot decode it
 */
export async function loadViews(blob, size, views = 0, index = 0) {
  let img;
  try {
    img = await decodeRgb(blob);
  } catch (e) {
    throw new Error(`${blob.name || 'image'}: cannot read image (${e.message || e.name})${FORMAT_HINT}`);
  }
  const jpeg = isJpeg(new Uint8Array(await blob.slice(0, 3).arrayBuffer()));
  const reduced = new Map();
  const R = size * size * 3;
  const out = new Float32Array((1 + views) * R);
  out.set(cropView(img, centerCropBox(img.width, img.height), size, jpeg, reduced), 0);
  for (let v = 0; v < views; v++) {
    const rand = seeded(viewSeed(index, v));
    const pixels = cropView(img, randomResizedCropBox(img.width, img.height, rand), size, jpeg, reduced);
    // a copy: pillowResize hands back its input when the box is the whole size x size image
    out.set(rand() < 0.5 ? flipRgb(Uint8Array.from(pixels), size, size) : pixels, (1 + v) * R);
  }
  return out;
}

/** The eval path alone: Float32Array [size * size * 3] (see loadViews). */
export function loadImage(blob, size) {
  return loadViews(blob, size, 0);
}

// The augmented views' feature cache as features._store keeps it: float16 (IEEE half, as Uint16)
// times a float32 scale per row (its max |x|, so float16's ~3 significant digits hold whatever the
// features' magnitude). Half the bytes of float32: views x photos x feature size is the page's largest array.

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** float32 -> IEEE half bits, rounded to nearest even (numpy's astype(float16)). */
export function toHalf(x) {
  f32[0] = x;
  const b = u32[0];
  const sign = (b >>> 16) & 0x8000;
  const exp = (b >>> 23) & 0xff;
  let mant = b & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  let e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    const half = 1 << (shift - 1);
    let m = mant >>> shift;
    const rest = mant & ((1 << shift) - 1);
    if (rest > half || (rest === half && (m & 1))) m += 1;
    return sign | m;
  }
  let m = mant >>> 13;
  const rest = mant & 0x1fff;
  if (rest > 0x1000 || (rest === 0x1000 && (m & 1))) {
    m += 1;
    if (m === 0x400) { m = 0; e += 1; }
    if (e >= 0x1f) return sign | 0x7c00;
  }
  return sign | (e << 10) | m;
}

let table = null;
/** IEEE half bits -> float32, by a 65536-entry table. */
export function halfTable() {
  if (table) return table;
  table = new Float32Array(65536);
  for (let h = 0; h < 65536; h++) {
    const sign = h & 0x8000 ? -1 : 1;
    const e = (h >>> 10) & 0x1f;
    const m = h & 0x3ff;
    table[h] = e === 0 ? sign * m * 2 ** -24 : e === 0x1f ? (m ? NaN : sign * Infinity) : sign * (1 + m / 1024) * 2 ** (e - 15);
  }
  return table;
}

/** `rows` rows of `size` floats as {data: Uint16Array, scales: Float32Array [rows]} (features._store). */
export function encodeRows(x, rows, size) {
  const data = new Uint16Array(rows * size);
  const scales = new Float32Array(rows);
  for (let r = 0; r < rows; r++) {
    let max = 0;
    for (let i = r * size; i < (r + 1) * size; i++) max = Math.max(max, Math.abs(x[i]));
    const scale = Number.isFinite(max) && max > 0 ? Math.fround(max) : 1;
    scales[r] = scale;
    for (let i = r * size; i < (r + 1) * size; i++) data[i] = toHalf(x[i] / scale);
  }
  return { data, scales };
}

/** Row `r` of an encoded array as float32, written into `out` at `offset`. */
export function decodeRow(enc, r, size, out, offset = 0) {
  const t = halfTable();
  const s = enc.scales[r];
  for (let i = 0; i < size; i++) out[offset + i] = t[enc.data[r * size + i]] * s;
  return out;
}

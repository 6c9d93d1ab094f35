// The tftl model file in the browser: a TFLite flatbuffer followed by a ZIP (tftl.json,
// labels.txt, and for a fine-tuned model state.npz). Mirrors tftl/runtime/modelfile.py
// (read_model, write_model) and session.py (state_npz_bytes, save_model), so a file
// written here is what `tftl-train --output` writes and tftl-eval / tftl-predict read it.
import { unzipSync, zipSync, strFromU8, strToU8 } from 'fflate';

export const FORMAT = 'tftl-3';
// tftl-2 differs only in its scalar learning_rate and loss, which the browser feeds by the
// shape the model declares (worker.js), so it is read too.
export const FORMATS = ['tftl-2', FORMAT];
export const METADATA_NAME = 'tftl.json';
export const LABELS_NAME = 'labels.txt';
export const STATE_NAME = 'state.npz';
const EXPORT_HINT = 'export it again with python -m converters.export';
// Signatures the page calls; `train` (image-level) is not needed: training runs on cached features.
export const NEEDED_SIGNATURES = ['extract', 'train_features', 'infer_features', 'save', 'restore'];
const MAX_LABELS = 100000;
const MAX_IMAGE_SIZE = 2048;
const MAX_BATCH = 1024;
// Same timestamp as the Python writer (zipfile.ZipInfo date_time 1980-01-01 00:00:00).
const ZIP_DATE = new Date(1980, 0, 1, 0, 0, 0);

export class ModelFileError extends Error {}

// contract.LABEL_RULE (tftl/runtime/contract.py), as Python applies it: lengths in code points,
// "outer spaces" as Python's str.isspace, and the refused categories Cc, Cs, Zl, Zp.
export const MAX_LABEL_CHARS = 256;
const PY_SPACE = /^[\t\n\v\f\r\x1c-\x1f\x85\p{Zs}\u2028\u2029]$/u;
const REFUSED = /^[\p{Cc}\p{Cs}\p{Zl}\p{Zp}\uFEFF/\\]$/u;

function pyStrip(text) {
  const chars = [...text];
  let start = 0;
  let end = chars.length;
  while (start < end && PY_SPACE.test(chars[start])) start++;
  while (end > start && PY_SPACE.test(chars[end - 1])) end--;
  return chars.slice(start, end).join('');
}

/** What breaks the label rule in `label` (contract.label_problem), or '' for a valid label. */
export function labelProblem(label) {
  if (!pyStrip(label)) return 'is empty';
  const chars = [...label];
  if (chars.length > MAX_LABEL_CHARS) return `has ${chars.length} characters`;
  if (label !== pyStrip(label)) return 'has outer spaces';
  if (label === '.' || label === '..') return 'is a path component';
  const bad = chars.find((c) => REFUSED.test(c));
  return bad === undefined ? '' : `holds U+${bad.codePointAt(0).toString(16).toUpperCase().padStart(4, '0')}`;
}

/**
 * The labels of a labels.txt text as contract.parse_labels reads them: a leading BOM dropped, split
 * at "\n" only (a stray "\r", U+2028 or \x1c is a bad label, not a line break), one trailing "\r"
 * per line dropped, blank lines dropped; every label checked, and unique. Throws ModelFileError.
 */
export function parseLabels(text, where = LABELS_NAME) {
  const body = text.startsWith('\uFEFF') ? text.slice(1) : text;
  const labels = body.split('\n').map((l) => (l.endsWith('\r') ? l.slice(0, -1) : l)).filter((l) => pyStrip(l));
  if (!labels.length) throw new ModelFileError(`${where}: no labels — a model needs at least one class`);
  for (const label of labels) {
    const problem = labelProblem(label);
    if (problem) {
      const shown = JSON.stringify(label).replace(/[\u0085\u2028\u2029]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
      throw new ModelFileError(`${where}: label ${shown} ${problem}; a label must be 1-${MAX_LABEL_CHARS} `
        + "characters of printable text on one line, with no '/', backslash or outer spaces — rename it");
    }
  }
  if (new Set(labels).size !== labels.length) throw new ModelFileError(`${where}: a label appears twice — each label must be unique`);
  return labels;
}

/** Where the appended ZIP starts: what Python's zipfile computes from the end record. */
function zipStart(bytes, name) {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const lowest = Math.max(0, bytes.length - 22 - 65535);
  for (let eocd = bytes.length - 22; eocd >= lowest; eocd--) {
    if (view.getUint32(eocd, true) !== 0x06054b50) continue;
    const entries = view.getUint16(eocd + 10, true);
    const cdSize = view.getUint32(eocd + 12, true);
    const cdOffset = view.getUint32(eocd + 16, true);
    const cdPos = eocd - cdSize;
    const shift = cdPos - cdOffset;
    if (cdPos < 0 || shift < 0) break;
    let first = Infinity;
    for (let i = 0, p = cdPos; i < entries; i++) {
      if (p + 46 > eocd || view.getUint32(p, true) !== 0x02014b50) {
        throw new ModelFileError(`${name} is truncated or corrupted — ${EXPORT_HINT}`);
      }
      first = Math.min(first, view.getUint32(p + 42, true));
      p += 46 + view.getUint16(p + 28, true) + view.getUint16(p + 30, true) + view.getUint16(p + 32, true);
    }
    return { shift, flatEnd: shift + (entries ? first : 0) };
  }
  // No end record: a cut-off tftl file still holds its archive's start (as modelfile.py tells).
  if (containsBytes(bytes, strToU8(`PK\x03\x04`)) && containsBytes(bytes, strToU8(METADATA_NAME))) {
    throw new ModelFileError(`${name} is truncated or corrupted (its ZIP has no end) — ${EXPORT_HINT}`);
  }
  throw new ModelFileError(`${name} is not a tftl model (no tftl metadata ZIP after the flatbuffer) — ${EXPORT_HINT}`);
}

function containsBytes(haystack, needle) {
  outer: for (let i = haystack.indexOf(needle[0]); i >= 0 && i <= haystack.length - needle.length; i = haystack.indexOf(needle[0], i + 1)) {
    for (let j = 1; j < needle.length; j++) if (haystack[i + j] !== needle[j]) continue outer;
    return true;
  }
  return false;
}

export async function sha256Hex(bytes) {
  const digest = await crypto.subtle.digest('SHA-256', bytes);
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, '0')).join('');
}

function checkMeta(meta, labels, name) {
  const bad = (what) => new ModelFileError(`${name}: ${what} — ${EXPORT_HINT}`);
  if (meta === null || typeof meta !== 'object' || Array.isArray(meta)) throw bad('tftl.json is not a JSON object');
  if (meta.format === 'tftl-1') {
    throw new ModelFileError(`${name} is a tftl-1 file, which the browser cannot train (save() has no input, scalar opt_step) — ${EXPORT_HINT} to get ${FORMAT}`);
  }
  if (!FORMATS.includes(meta.format)) throw bad(`model-file format ${JSON.stringify(meta.format)}; the browser reads ${FORMATS.join(', ')}`);
  const int = (key, lo, hi) => {
    const v = meta[key];
    if (!Number.isInteger(v) || v < lo || v > hi) throw bad(`tftl.json field '${key}' must be an integer in ${lo}..${hi}, got ${JSON.stringify(v)}`);
  };
  int('image_size', 8, MAX_IMAGE_SIZE);
  int('batch', 1, MAX_BATCH);
  int('num_labels', 1, MAX_LABELS);
  if (meta.num_labels !== labels.length) throw new ModelFileError(`${name} is truncated or corrupted (labels.txt has ${labels.length} labels, tftl.json says ${meta.num_labels}) — ${EXPORT_HINT}`);
  if (!Array.isArray(meta.state_names) || !meta.state_names.length) throw bad("tftl.json has no 'state_names'");
  const sigs = meta.signatures || [];
  const missing = NEEDED_SIGNATURES.filter((s) => !sigs.includes(s));
  if (missing.length) throw bad(`it has no ${missing.join(', ')} signature(s), so it cannot train here`);
}

/**
 * Parse and verify a tftl model file.
 * @param {Uint8Array} bytes the whole file
 * @param {string} name the file name, for messages
 * @returns {Promise<{flatbuffer: Uint8Array, meta: object, labels: string[], state: object|null, bytes: Uint8Array}>}
 * @throws {ModelFileError} one line naming the file and the fix
 */
export async function readModel(bytes, name) {
  if (bytes.length < 8 || strFromU8(bytes.subarray(4, 8)) !== 'TFL3') {
    throw new ModelFileError(`${name} is not a TFLite model (no TFL3 identifier) — ${EXPORT_HINT}`);
  }
  const { shift, flatEnd } = zipStart(bytes, name);
  let files;
  try {
    files = unzipSync(bytes.subarray(shift));
  } catch (e) {
    throw new ModelFileError(`${name} is truncated or corrupted (${e.message}) — ${EXPORT_HINT}`);
  }
  if (!files[METADATA_NAME]) throw new ModelFileError(`${name} is not a tftl model (no tftl.json) — ${EXPORT_HINT}`);
  if (!files[LABELS_NAME]) throw new ModelFileError(`${name} is truncated or corrupted (no labels.txt) — ${EXPORT_HINT}`);
  let meta;
  try {
    meta = JSON.parse(strFromU8(files[METADATA_NAME]));
  } catch (e) {
    throw new ModelFileError(`${name} has a damaged tftl.json (${e.message}) — ${EXPORT_HINT}`);
  }
  const labels = parseLabels(strFromU8(files[LABELS_NAME]), `${name}: ${LABELS_NAME}`);
  checkMeta(meta, labels, name);
  const flatbuffer = bytes.subarray(0, flatEnd);
  if ((await sha256Hex(flatbuffer)) !== meta.content_hash) {
    throw new ModelFileError(`${name} is truncated or corrupted (content_hash does not match the flatbuffer) — ${EXPORT_HINT}`);
  }
  const state = files[STATE_NAME] ? readNpz(files[STATE_NAME], name) : null;
  return { flatbuffer, meta, labels, state, bytes };
}

// ---- .npy / .npz (numpy's format 1.0, float32 little-endian only) ----------------------

const NPY_MAGIC = [0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59];

function shapeRepr(shape) {
  if (shape.length === 0) return '()';
  if (shape.length === 1) return `(${shape[0]},)`;
  return `(${shape.join(', ')})`;
}

/** One float32 array as .npy bytes, header laid out as numpy 2's write_array does. */
export function npyBytes(shape, data) {
  let header = `{'descr': '<f4', 'fortran_order': False, 'shape': ${shapeRepr(shape)}, }`;
  if (shape.length) header += ' '.repeat(21 - String(shape[0]).length); // numpy's GROWTH_AXIS_MAX_DIGITS
  const pad = 64 - ((10 + header.length + 1) % 64);
  header += ' '.repeat(pad) + '\n'; // numpy pads a full 64 when already aligned
  const out = new Uint8Array(10 + header.length + data.byteLength);
  out.set(NPY_MAGIC, 0);
  out[6] = 1;
  out[7] = 0;
  new DataView(out.buffer).setUint16(8, header.length, true);
  out.set(strToU8(header), 10);
  out.set(new Uint8Array(data.buffer, data.byteOffset, data.byteLength), 10 + header.length);
  return out;
}

function parseNpy(bytes, where) {
  const bad = () => new ModelFileError(`${where} is damaged (not a float32 .npy) — train it again`);
  if (bytes.length < 10 || NPY_MAGIC.some((b, i) => bytes[i] !== b) || bytes[6] !== 1) throw bad();
  const hlen = new DataView(bytes.buffer, bytes.byteOffset).getUint16(8, true);
  const header = strFromU8(bytes.subarray(10, 10 + hlen));
  const m = /'descr':\s*'<f4'.*'fortran_order':\s*False.*'shape':\s*\(([\d,\s]*)\)/.exec(header);
  if (!m) throw bad();
  const shape = m[1].split(',').map((s) => s.trim()).filter(Boolean).map(Number);
  const n = shape.reduce((a, b) => a * b, 1);
  if (10 + hlen + 4 * n !== bytes.length) throw bad();
  const data = new Float32Array(n);
  new Uint8Array(data.buffer).set(bytes.subarray(10 + hlen));
  return { shape, data };
}

function readNpz(bytes, name) {
  let files;
  try {
    files = unzipSync(bytes);
  } catch (e) {
    throw new ModelFileError(`${name} has a damaged state.npz (${e.message}) — train it again`);
  }
  const state = {};
  for (const [member, data] of Object.entries(files)) {
    state[member.replace(/\.npy$/, '')] = parseNpy(data, `${name}:${STATE_NAME}/${member}`);
  }
  return state;
}

/** {name: {shape, data}} as state.npz bytes: float32, sorted names, stored, fixed timestamps. */
export function stateNpzBytes(state) {
  const entries = {};
  for (const name of Object.keys(state).sort()) {
    entries[`${name}.npy`] = npyBytes(state[name].shape, state[name].data);
  }
  return zipSync(entries, { level: 0, mtime: ZIP_DATE });
}

function sortedJson(value, indent = '') {
  // json.dumps(meta, indent=2, sort_keys=True): the same layout as the Python writer.
  if (Array.isArray(value)) {
    if (!value.length) return '[]';
    const inner = indent + '  ';
    return `[\n${value.map((v) => inner + sortedJson(v, inner)).join(',\n')}\n${indent}]`;
  }
  if (value !== null && typeof value === 'object') {
    const keys = Object.keys(value).sort();
    if (!keys.length) return '{}';
    const inner = indent + '  ';
    return `{\n${keys.map((k) => `${inner}${JSON.stringify(k)}: ${sortedJson(value[k], inner)}`).join(',\n')}\n${indent}}`;
  }
  return JSON.stringify(value);
}

/**
 * The fine-tuned model as one self-contained file, as session.save_model writes it.
 * @param {{flatbuffer: Uint8Array, meta: object}} model what readModel returned
 * @param {string[]} labels
 * @param {object} state {name: {shape, data: Float32Array}} from the save signature
 * @param {object} training a summary stored as tftl.json "training" (as tftl-train does)
 * @returns {Uint8Array}
 */
export async function writeModel(model, labels, state, training) {
  const meta = { ...model.meta, trained_state: true, training };
  meta.content_hash = await sha256Hex(model.flatbuffer);
  meta.num_labels = labels.length;
  const zip = zipSync({
    [METADATA_NAME]: strToU8(sortedJson(meta)),
    [LABELS_NAME]: strToU8(labels.join('\n') + '\n'),
    [STATE_NAME]: stateNpzBytes(state),
  }, { level: 0, mtime: ZIP_DATE });
  const out = new Uint8Array(model.flatbuffer.length + zip.length);
  out.set(model.flatbuffer, 0);
  out.set(zip, model.flatbuffer.length);
  return out;
}

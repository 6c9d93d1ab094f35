// The tftl model file in the browser: a TFLite flatbuffer followed by a ZIP (tftl.json,
// labels.txt, and for a fine-tuned model state.npz). Mirrors tftl/runtime/modelfile.py
// (read_model, write_model, state_npz_bytes, save_model), so a file
// written here is what `tftl-train --output` writes and tftl-eval / tftl-predict read it.
import { zipSync, strToU8 } from 'fflate';
import { ArchiveError, NotZip, openArchive, readMember } from './archive.js';
import { FlatbufferError, signatureTensors } from './tflite.js';

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
const MAX_FEATURE_ELEMENTS = 2 ** 26;
const MAX_STATE_TENSORS = 100000;
const GROUPS = ['trainable', 'bn_statistics', 'optimizer'];
// contract/rules.json caps_bytes: one set of caps for every reader.
export const MAX_MODEL_BYTES = 2 ** 30;
export const MAX_METADATA_BYTES = 16 * 2 ** 20;
export const MAX_LABELS_BYTES = 16 * 2 ** 20;
export const MAX_STATE_BYTES = 2 ** 30;
// Same timestamp as the Python writer (zipfile.ZipInfo date_time 1980-01-01 00:00:00).
const ZIP_DATE = new Date(1980, 0, 1, 0, 0, 0);

/** A refused model file: one line naming the file and the fix; `kind` is a contract/rules.json refusal class. */
export class ModelFileError extends Error {
  constructor(message, kind = 'damaged') {
    super(message);
    this.kind = kind;
  }
}

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
  if (!labels.length) throw new ModelFileError(`${where}: no labels — a model needs at least one class`, 'labels');
  for (const label of labels) {
    const problem = labelProblem(label);
    if (problem) {
      const shown = JSON.stringify(label).replace(/[\u0085\u2028\u2029]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
      throw new ModelFileError(`${where}: label ${shown} ${problem}; a label must be 1-${MAX_LABEL_CHARS} `
        + "characters of printable text on one line, with no '/', backslash or outer spaces — rename it", 'labels');
    }
  }
  if (new Set(labels).size !== labels.length) throw new ModelFileError(`${where}: a label appears twice — each label must be unique`, 'labels');
  return labels;
}

const UTF8 = new TextDecoder('utf-8', { fatal: true });

export async function sha256Hex(bytes) {
  const digest = await crypto.subtle.digest('SHA-256', bytes);
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, '0')).join('');
}

/** The appended archive, its tftl.json and labels.txt bytes, and where the flatbuffer ends. */
function archiveOf(bytes, name) {
  const damaged = (why) => new ModelFileError(`${name} is truncated or corrupted${why ? ` (${why})` : ''} — ${EXPORT_HINT}`);
  let archive;
  try {
    archive = openArchive(bytes);
  } catch (e) {
    if (!(e instanceof NotZip)) throw damaged(e.message);
    // A cut-off tftl file still holds its archive's start (as modelfile.py tells); a plain .tflite does not.
    let intact = false;
    try {
      intact = Object.keys(signatureTensors(bytes)).length >= 0 && !containsBytes(bytes, strToU8('PK\x03\x04'));
    } catch (_) { /* a damaged flatbuffer */ }
    if (intact) throw new ModelFileError(`${name} is not a tftl model (no tftl metadata ZIP after the flatbuffer) — ${EXPORT_HINT}`, 'not_tftl');
    throw damaged('its ZIP has no end');
  }
  if (!archive.entries.has(METADATA_NAME)) throw new ModelFileError(`${name} is not a tftl model (no tftl.json) — ${EXPORT_HINT}`, 'not_tftl');
  if (!archive.entries.has(LABELS_NAME)) throw damaged('no labels.txt');
  try {
    return { archive, metaBytes: readMember(archive, METADATA_NAME, MAX_METADATA_BYTES), labelsBytes: readMember(archive, LABELS_NAME, MAX_LABELS_BYTES) };
  } catch (e) {
    if (e instanceof ArchiveError) throw damaged(e.message);
    throw e;
  }
}

function containsBytes(haystack, needle) {
  outer: for (let i = haystack.indexOf(needle[0]); i >= 0 && i <= haystack.length - needle.length; i = haystack.indexOf(needle[0], i + 1)) {
    for (let j = 1; j < needle.length; j++) if (haystack[i + j] !== needle[j]) continue outer;
    return true;
  }
  return false;
}

/** contract.ModelMetadata.from_dict: every field of tftl.json (contract/tftl.schema.json), in its order. */
function checkMeta(meta, name) {
  const bad = (what) => new ModelFileError(`${name}: tftl.json ${what} — ${EXPORT_HINT}`, 'metadata');
  if (meta.format === 'tftl-1') {
    throw new ModelFileError(`${name} is a tftl-1 file, which the browser cannot train (save() has no input, scalar opt_step) — ${EXPORT_HINT} to get ${FORMAT}`, 'format');
  }
  if (!FORMATS.includes(meta.format)) throw new ModelFileError(`${name} has model-file format ${JSON.stringify(meta.format)}; the browser reads ${FORMATS.join(', ')} — ${EXPORT_HINT}`, 'format');
  const isInt = (v) => Number.isInteger(v) && typeof v === 'number';
  const int = (key, lo, hi, dflt) => {
    const v = key in meta ? meta[key] : dflt;
    if (!isInt(v) || v < lo || v > hi) throw bad(`field '${key}' must be an integer in ${lo}..${hi}, got ${JSON.stringify(v)}`);
  };
  const str = (key) => {
    if (typeof meta[key] !== 'string' || !meta[key]) throw bad(`field '${key}' must be a non-empty string`);
  };
  const names = (v) => Array.isArray(v) && v.length <= MAX_STATE_TENSORS && v.every((n) => typeof n === 'string' && n);
  int('image_size', 8, MAX_IMAGE_SIZE);
  const stateNames = meta.state_names === undefined ? [] : meta.state_names;
  if (!names(stateNames)) throw bad("field 'state_names' must be a list of names");
  const groups = meta.state_groups;
  if (groups !== undefined && groups !== null) {
    const all = GROUPS.flatMap((g) => (Array.isArray(groups[g]) ? groups[g] : []));
    const keys = typeof groups === 'object' && !Array.isArray(groups) ? Object.keys(groups).sort() : [];
    if (keys.join() !== [...GROUPS].sort().join() || JSON.stringify([...all].sort()) !== JSON.stringify([...stateNames].sort())) {
      throw bad(`'state_groups' must split 'state_names' into ${GROUPS.join(', ')}`);
    }
  }
  if (meta.trunk_end !== undefined && meta.trunk_end !== null && typeof meta.trunk_end !== 'string') throw bad("field 'trunk_end' must be a layer name or null");
  if (meta.trained_state !== undefined && typeof meta.trained_state !== 'boolean') throw bad("field 'trained_state' must be true or false");
  str('content_hash');
  if (!/^[0-9a-f]{64}$/.test(meta.content_hash)) throw bad("field 'content_hash' must be 64 lowercase hex digits (sha256)");
  const pre = meta.preprocessing;
  if (pre !== undefined && pre !== null && (typeof pre !== 'object' || Array.isArray(pre) || !Object.values(pre).every((v) => typeof v === 'string'))) {
    throw bad("field 'preprocessing' must map names to text");
  }
  const m = 'bn_momentum' in meta ? meta.bn_momentum : 0.99;
  if (typeof m !== 'number' || !(m >= 0 && m < 1)) throw bad(`field 'bn_momentum' must be a number in [0, 1), got ${JSON.stringify(m)}`);
  if (meta.signatures !== undefined && meta.signatures !== null && !(Array.isArray(meta.signatures) && meta.signatures.every((v) => typeof v === 'string'))) {
    throw bad("field 'signatures' must be a list of names");
  }
  str('model');
  str('scheme');
  int('blocks', 0, 1000, 0);
  int('batch', 1, MAX_BATCH);
  if (meta.micro_batch !== undefined && meta.micro_batch !== null) int('micro_batch', 1, meta.batch);
  int('num_labels', 1, MAX_LABELS);
  const fs = meta.feature_shape;
  if (fs !== undefined && fs !== null) {
    const ok = Array.isArray(fs) && fs.length >= 1 && fs.length <= 4 && fs.every((d) => isInt(d) && d >= 1 && d <= 2 ** 20);
    if (!ok || fs.reduce((a, b) => a * b, 1) > MAX_FEATURE_ELEMENTS) throw bad(`field 'feature_shape' must be 1-4 positive integers (at most ${MAX_FEATURE_ELEMENTS} elements)`);
  }
  recipeOf(meta, name);
}

export const HEAD_INITS = ['none', 'probe'];
export const MAX_VIEWS = 64;
/** contract.LEGACY_RECIPE: what a file without `recipe` trains with. */
export const LEGACY_RECIPE = Object.freeze({ lr: 5e-4, epochs: 10, min_steps: 500, warmup_steps: null, cache_views: 2, head_init: 'none', classifier: [] });

/**
 * contract.Recipe.from_dict: tftl.json `recipe` (absent or null: LEGACY_RECIPE; each key optional),
 * checked by Python's rules in Python's order; returns the recipe with every key.
 */
export function recipeOf(meta, name = METADATA_NAME) {
  const raw = meta.recipe;
  if (raw === undefined || raw === null) return LEGACY_RECIPE;
  const bad = (what) => new ModelFileError(`${name}: tftl.json ${what} — ${EXPORT_HINT}`, 'metadata');
  if (typeof raw !== 'object' || Array.isArray(raw)) throw bad("field 'recipe' must be an object");
  const get = (key) => (key in raw ? raw[key] : LEGACY_RECIPE[key]);
  const lr = get('lr');
  if (typeof lr !== 'number' || !(lr > 0 && lr <= 1)) throw bad(`field 'recipe.lr' must be a number in (0, 1], got ${JSON.stringify(lr)}`);
  const headInit = get('head_init');
  if (!HEAD_INITS.includes(headInit)) throw bad(`field 'recipe.head_init' must be one of ${HEAD_INITS.join(', ')}, got ${JSON.stringify(headInit)}`);
  const classifier = get('classifier');
  const names = meta.state_names || [];
  const ok = Array.isArray(classifier) && (classifier.length === 0 ? headInit !== 'probe'
    : classifier.length === 2 && classifier.every((c) => typeof c === 'string' && names.includes(c)) && classifier[0] !== classifier[1]);
  if (!ok) throw bad("field 'recipe.classifier' must name the classifier's kernel and bias (two distinct names among 'state_names'; needed by head_init 'probe')");
  const int = (key, lo, hi) => {
    const v = get(key);
    if (!(Number.isInteger(v) && v >= lo && v <= hi)) throw bad(`field 'recipe.${key}' must be an integer in ${lo}..${hi}, got ${JSON.stringify(v)}`);
    return v;
  };
  const epochs = int('epochs', 1, 100000);
  const minSteps = int('min_steps', 0, 10000000);
  const warmup = raw.warmup_steps === undefined || raw.warmup_steps === null ? null : int('warmup_steps', 0, 10000000);
  return { lr, epochs, min_steps: minSteps, warmup_steps: warmup, cache_views: int('cache_views', 1, MAX_VIEWS), head_init: headInit, classifier: [...classifier] };
}

const sameShape = (a, b) => a.length === b.length && a.every((d, i) => d === b[i]);

/** modelfile._check_graph: tftl.json against the shapes the graph's signatures declare. */
function checkGraph(meta, sigs, name) {
  const b = meta.batch;
  const r = meta.image_size;
  const fs = meta.feature_shape || [r, r, 3];
  const want = { images: [[b, r, r, 3], 'batch and image_size'], probabilities: [[b, meta.num_labels], 'batch and num_labels'], features: [[b, ...fs], 'batch and feature_shape'] };
  const bad = (what) => new ModelFileError(`${name}: ${what} — ${EXPORT_HINT}`, 'metadata');
  const scalarFree = FORMATS.indexOf(meta.format) >= FORMATS.indexOf('tftl-3');
  for (const [sig, entry] of Object.entries(sigs)) {
    for (const side of ['inputs', 'outputs']) {
      for (const [tensor, { shape, type }] of Object.entries(entry[side])) {
        const w = want[tensor];
        if (w && (!sameShape(shape, w[0]) || type !== 0)) throw bad(`the ${sig} signature's ${tensor} tensor is [${shape}], but tftl.json's ${w[1]} make [${w[0]}]`);
        if (scalarFree && !shape.length) throw bad(`the ${sig} signature's ${tensor} tensor is a scalar, which format ${meta.format} forbids`);
      }
    }
  }
  const restore = sigs.restore;
  const stateNames = meta.state_names || [];
  if (restore && stateNames.length && JSON.stringify(Object.keys(restore.inputs).sort()) !== JSON.stringify([...stateNames].sort())) {
    throw bad("tftl.json 'state_names' differ from the restore signature's inputs");
  }
}

/**
 * Parse and verify a tftl model file in the order of contract/rules.json "refusal_order".
 * @param {Uint8Array} bytes the whole file
 * @param {string} name the file name, for messages
 * @returns {Promise<{flatbuffer: Uint8Array, meta: object, labels: string[], state: object|null, signatures: object, bytes: Uint8Array}>}
 * @throws {ModelFileError} one line naming the file and the fix, with its refusal class in `kind`
 */
export async function readModel(bytes, name) {
  if (bytes.length > MAX_MODEL_BYTES) throw new ModelFileError(`${name} is ${bytes.length} bytes, over the ${MAX_MODEL_BYTES} a model file may have — ${EXPORT_HINT}`);
  if (bytes.length < 8) throw new ModelFileError(`${name} is truncated or corrupted — ${EXPORT_HINT}`);
  if (String.fromCharCode(...bytes.subarray(4, 8)) !== 'TFL3') {
    throw new ModelFileError(`${name} is not a TFLite model (no TFL3 identifier) — ${EXPORT_HINT}`, 'not_tflite');
  }
  const { archive, metaBytes, labelsBytes } = archiveOf(bytes, name);
  let meta;
  try {
    meta = JSON.parse(UTF8.decode(metaBytes));
  } catch (e) {
    throw new ModelFileError(`${name} has a damaged tftl.json (${e.message}) — ${EXPORT_HINT}`);
  }
  const flatbuffer = bytes.subarray(0, archive.start);
  if (meta === null || typeof meta !== 'object' || Array.isArray(meta) || (await sha256Hex(flatbuffer)) !== meta.content_hash) {
    throw new ModelFileError(`${name} is truncated or corrupted (content_hash does not match the flatbuffer) — ${EXPORT_HINT}`);
  }
  checkMeta(meta, name);
  let labelsText;
  try {
    labelsText = UTF8.decode(labelsBytes);
  } catch (e) {
    throw new ModelFileError(`${name}: labels.txt is not UTF-8 text — ${EXPORT_HINT}`, 'labels');
  }
  const labels = parseLabels(labelsText, `${name}: ${LABELS_NAME}`);
  if (meta.num_labels !== labels.length) throw new ModelFileError(`${name} has ${labels.length} labels in labels.txt but tftl.json declares num_labels ${meta.num_labels} — ${EXPORT_HINT}`, 'labels');
  let signatures;
  try {
    signatures = signatureTensors(flatbuffer);
  } catch (e) {
    if (e instanceof FlatbufferError) throw new ModelFileError(`${name} is truncated or corrupted (${e.message}) — ${EXPORT_HINT}`);
    throw e;
  }
  checkGraph(meta, signatures, name);
  const state = archive.entries.has(STATE_NAME) ? readState(archive, signatures, optimizerNames(meta), name) : null;
  return { flatbuffer, meta, labels, state, signatures, bytes };
}

/** The optimizer group's state names (tftl.json state_groups, else contract.group_of's naming rule). */
export function optimizerNames(meta) {
  if (meta.state_groups) return meta.state_groups.optimizer;
  return (meta.state_names || []).filter((n) => n === 'opt_step' || n.startsWith('opt_m__') || n.startsWith('opt_v__'));
}

/** The signatures a host needs that the graph lacks (the page needs NEEDED_SIGNATURES). */
export function missingSignatures(model, needed = NEEDED_SIGNATURES) {
  return needed.filter((s) => !model.signatures[s]);
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
  const bad = (why) => new ModelFileError(`${where} ${why} — train it again`, 'state');
  if (bytes.length < 10 || NPY_MAGIC.some((b, i) => bytes[i] !== b) || (bytes[6] !== 1 && bytes[6] !== 2)) throw bad('is not a .npy array');
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const long = bytes[6] === 2;
  const hlen = long ? view.getUint32(8, true) : view.getUint16(8, true);
  const from = (long ? 12 : 10) + hlen;
  if (from > bytes.length) throw bad('has a damaged .npy header');
  const header = String.fromCharCode(...bytes.subarray(long ? 12 : 10, from));
  const descr = /'descr':\s*'([^']*)'/.exec(header);
  const fortran = /'fortran_order':\s*(True|False)/.exec(header);
  const shapeText = /'shape':\s*\(([\d,\s]*)\)/.exec(header);
  if (!descr || !fortran || !shapeText) throw bad('has a damaged .npy header');
  if (descr[1] !== '<f4' || fortran[1] !== 'False') throw bad(`holds ${descr[1]}${fortran[1] === 'True' ? ' in Fortran order' : ''}, but state.npz holds little-endian float32 (<f4) only`);
  const shape = shapeText[1].split(',').map((s) => s.trim()).filter(Boolean).map(Number);
  return { shape, from };
}

/**
 * state.npz, every member checked against the restore signature's inputs before it is read: all of
 * them, or all but the `optimizer` group (a deployable fine-tuned file).
 */
function readState(archive, signatures, optimizer, name) {
  const where = `state.npz of ${name}`;
  let npz;
  let inner;
  try {
    npz = readMember(archive, STATE_NAME, MAX_STATE_BYTES);
  } catch (e) {
    throw new ModelFileError(`${name} has a damaged state.npz (${e.message}) — train it again`);
  }
  try {
    inner = openArchive(npz);
  } catch (e) {
    throw new ModelFileError(`${where} is damaged (${e.message}) — train it again`, 'state');
  }
  const declared = signatures.restore ? signatures.restore.inputs : null;
  const names = [...inner.entries.keys()];
  const bad = names.find((n) => !n.endsWith('.npy') || n === '.npy');
  if (bad !== undefined) throw new ModelFileError(`${where}: member '${bad}' is not a .npy array — train it again`, 'state');
  const total = names.reduce((sum, n) => sum + inner.entries.get(n).usize, 0);
  if (total > MAX_STATE_BYTES) throw new ModelFileError(`${where}: arrays declare ${total} bytes (at most ${MAX_STATE_BYTES}) — train it again`, 'state');
  const tensors = names.map((n) => n.slice(0, -4));
  const all = declared ? Object.keys(declared).sort() : [];
  const deployable = all.filter((n) => !optimizer.includes(n));
  const got = JSON.stringify([...tensors].sort());
  if (declared && got !== JSON.stringify(all) && !(optimizer.length && got === JSON.stringify(deployable))) {
    throw new ModelFileError(`${where} does not fit the model (other tensor names) — it belongs to another model`, 'state');
  }
  const state = {};
  for (const tensor of tensors) {
    let bytes;
    try {
      bytes = readMember(inner, `${tensor}.npy`, MAX_STATE_BYTES);
    } catch (e) {
      throw new ModelFileError(`${where} is damaged (${e.message}) — train it again`, 'state');
    }
    const { shape, from } = parseNpy(bytes, `${where}: ${tensor}`);
    const want = declared ? declared[tensor].shape : shape;
    if (!sameShape(shape, want) && !(shape.length === 0 && sameShape(want, [1]))) {
      throw new ModelFileError(`${where}: ${tensor} has shape (${shape}), the model has (${want}) — it belongs to another model`, 'state');
    }
    const n = shape.reduce((a, b) => a * b, 1);
    if (bytes.length - from !== 4 * n) throw new ModelFileError(`${where}: ${tensor} is damaged (its data is not ${4 * n} bytes) — train it again`, 'state');
    const data = new Float32Array(n);
    new Uint8Array(data.buffer).set(bytes.subarray(from));
    if (!data.every(Number.isFinite)) throw new ModelFileError(`${where} holds NaN or infinite values in ${tensor} — train it again`, 'state');
    state[tensor] = { shape: want, data };
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
 * The fine-tuned model as one self-contained file, as modelfile.save_model writes it.
 * @param {{flatbuffer: Uint8Array, meta: object}} model what readModel returned
 * @param {string[]} labels
 * @param {object} state {name: {shape, data: Float32Array}} from the save signature
 * @param {object} training a summary stored as tftl.json "training" (as tftl-train does)
 * @returns {Uint8Array}
 */
export async function writeModel(model, labels, state, training) {
  const meta = { ...model.meta, trained_state: true, training };
  // A deployable file: weights and BN statistics; the optimizer state stays with the session.
  const optimizer = optimizerNames(model.meta);
  state = Object.fromEntries(Object.entries(state).filter(([n]) => !optimizer.includes(n)));
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

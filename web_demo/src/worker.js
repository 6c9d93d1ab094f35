// The Web Worker that owns LiteRT.js: loads the model, extracts features once per photo view,
// trains on the cached views (train_features, one view per photo drawn each epoch, cosine LR
// with warm-up as tftl-train; validation on the centre views after each epoch),
// predicts, saves and restores state. The page stays responsive and can cancel.
//
// LiteRT.js pitfalls handled here: outputs are read by name (their order differs from
// Python's), every Tensor is deleted, and restore's input shapes come from the signature.
import { loadLiteRt, loadAndCompile, Tensor } from '@litertjs/core';
import { cosineLr, defaultWarmup, epochPlan } from './schedule.js';
import { fitHead } from './probe.js';
import { decodeRow } from './half.js';

let model = null;
let meta = null;
// The training photos' cached views, {data: Uint16Array (float16), scales: Float32Array, count}: row
// (photo * count + view) of featureSize values; their labels; the held-out photos' centre features.
let views = null;
let labels = null; // Int32Array [n]
let val = null; // {features: Float32Array [m * featureSize], labels: Int32Array [m]} or null
let cancel = false;
const log = []; // per-step records of the last training run (for tests and the chart)

const wasmFile = (threads) => new URL(threads > 1 ? 'litert_wasm_threaded_internal.js' : 'litert_wasm_internal.js', self.location).href;

/** Let queued messages (cancel) run between steps: a macrotask without setTimeout's clamp. */
function yieldToEvents() {
  return new Promise((resolve) => {
    const ch = new MessageChannel();
    ch.port1.onmessage = () => resolve();
    ch.port2.postMessage(0);
  });
}

/** Run a signature on named typed arrays; returns {name: {shape, data}} and frees every Tensor. */
async function run(signature, inputs) {
  const tensors = {};
  let outs = null;
  try {
    for (const [name, { data, shape }] of Object.entries(inputs)) tensors[name] = new Tensor(data, shape);
    outs = await model.run(signature, tensors);
    const result = {};
    for (const [name, t] of Object.entries(outs)) {
      result[name] = { shape: Array.from(t.type.layout.dimensions), data: (await t.data()).slice() };
    }
    return result;
  } finally {
    for (const t of Object.values(tensors)) t.delete();
    if (outs) for (const t of Object.values(outs)) t.delete();
  }
}

function inputShapes(signature) {
  const shapes = {};
  for (const d of model.signatures[signature].getInputDetails()) shapes[d.name] = Array.from(d.shape);
  return shapes;
}

async function load({ flatbuffer, metadata, threads }) {
  if (!model) {
    // The threaded glue starts its pthread workers from its own script, which it takes to
    // be the running one (this worker) unless told: name it, or every pthread runs worker.js.
    // LiteRT prints its INFO and WARNING lines to stderr: log those, keep console.error for errors.
    const printErr = (line) => (/^(INFO|WARNING): /.test(line) ? console.log : console.error)(line);
    self.Module = { mainScriptUrlOrBlob: wasmFile(threads), printErr };
    await loadLiteRt(wasmFile(threads));
  }
  else model.delete();
  meta = metadata;
  model = await loadAndCompile(new Uint8Array(flatbuffer), { accelerator: 'wasm', cpuOptions: { numThreads: threads } });
  views = null;
  labels = null;
  val = null;
  const signatures = {};
  for (const [name, runner] of Object.entries(model.signatures)) {
    signatures[name] = {
      inputs: runner.getInputDetails().map((d) => ({ name: d.name, dtype: d.dtype, shape: Array.from(d.shape) })),
      outputs: runner.getOutputDetails().map((d) => ({ name: d.name, dtype: d.dtype, shape: Array.from(d.shape) })),
    };
  }
  return { signatures, crossOriginIsolated: self.crossOriginIsolated, threads };
}

/** Rows [start, start + count) of `src` (rowSize floats each) padded to `batch` rows by repeating the last. */
function padRows(src, rowSize, rows, batch) {
  const out = new Float32Array(batch * rowSize);
  for (let i = 0; i < batch; i++) {
    const r = rows[Math.min(i, rows.length - 1)];
    out.set(src.subarray(r * rowSize, (r + 1) * rowSize), i * rowSize);
  }
  return out;
}

/** `extract` over n images (padded batches): the trunk's features, computed once per photo. */
async function extract({ images, count }) {
  const B = meta.batch;
  const R = meta.image_size;
  const imgSize = R * R * 3;
  const shape = inputShapes('extract').images;
  const chunks = [];
  let featSize = 0;
  for (let start = 0; start < count; start += B) {
    const rows = Array.from({ length: Math.min(B, count - start) }, (_, i) => start + i);
    const out = await run('extract', { images: { data: padRows(images, imgSize, rows, B), shape } });
    featSize = out.features.data.length / B;
    chunks.push(out.features.data.subarray(0, rows.length * featSize));
  }
  const result = new Float32Array(count * featSize);
  let offset = 0;
  for (const c of chunks) {
    result.set(c, offset);
    offset += c.length;
  }
  return { features: result, featureSize: featSize };
}

/** The batch's features: view `picks[i]` of training photo `rows[i]`, padded to the batch by the last row. */
function viewRows(rows, picks, featSize) {
  const B = meta.batch;
  const out = new Float32Array(B * featSize);
  for (let i = 0; i < B; i++) {
    const k = Math.min(i, rows.length - 1);
    decodeRow(views, rows[k] * views.count + picks[k], featSize, out, i * featSize);
  }
  return out;
}

async function trainStep(rows, picks, lr, shapes, featSize) {
  const B = meta.batch;
  const weights = new Float32Array(B);
  weights.fill(1, 0, rows.length);
  const lab = new Int32Array(B);
  for (let i = 0; i < B; i++) lab[i] = labels[rows[Math.min(i, rows.length - 1)]];
  const out = await run('train_features', {
    features: { data: viewRows(rows, picks, featSize), shape: shapes.features },
    labels: { data: lab, shape: shapes.labels },
    sample_weight: { data: weights, shape: shapes.sample_weight },
    learning_rate: { data: new Float32Array([lr]), shape: shapes.learning_rate },
  });
  const probs = out.probabilities.data;
  const K = probs.length / B;
  let correct = 0;
  rows.forEach((r, i) => {
    let best = 0;
    for (let k = 1; k < K; k++) if (probs[i * K + k] > probs[i * K + best]) best = k;
    correct += best === labels[r] ? 1 : 0;
  });
  return { loss: out.loss.data[0], correct };
}

/**
 * The LP of LP-FT (loop.Trainer._fit_head): the classifier [kernel, bias] fitted by src/probe.js on
 * every training photo's mean embed_features over its cached views, then restored with the rest of
 * the state; returns the fit's record.
 */
async function fitCachedHead([kernelName, biasName], featSize) {
  if (!model.signatures.embed_features) throw new Error('the model has no embed_features signature, which its recipe (head_init probe) needs — export it again with python -m converters.export');
  const t0 = performance.now();
  const B = meta.batch;
  const n = labels.length;
  const V = views.count;
  const shape = inputShapes('embed_features').features;
  let emb = null;
  let d = 0;
  for (let v = 0; v < V; v++) {
    for (let start = 0; start < n; start += B) {
      const rows = Array.from({ length: Math.min(B, n - start) }, (_, i) => start + i);
      const out = await run('embed_features', { features: { data: viewRows(rows, rows.map(() => v), featSize), shape } });
      d = out.embedding.data.length / B;
      emb = emb || new Float64Array(n * d);
      for (let i = 0; i < rows.length * d; i++) emb[start * d + i] += out.embedding.data[i];
    }
    if (cancel) throw new Error('cancelled while fitting the head');
    await yieldToEvents();
  }
  for (let i = 0; i < emb.length; i++) emb[i] /= V; // the sum over views, then / views (as _fit_head)
  const K = meta.num_labels;
  const fit = fitHead(emb, labels, n, d, K);
  const state = await save();
  state[kernelName] = { data: fit.kernel, shape: [d, K] };
  state[biasName] = { data: fit.bias, shape: [K] };
  await restore({ state });
  return { l2: fit.l2, cv_accuracy: fit.cv, views: V, images: n, seconds: (performance.now() - t0) / 1000,
    kernel: Array.from(fit.kernel), bias: Array.from(fit.bias) };
}

/** Accuracy of infer_features on the held-out photos' centre features (null without any). */
async function valAccuracy(featureSize) {
  if (!val || !val.labels.length) return null;
  const probs = await predictFeatures({ features: val.features, count: val.labels.length, featureSize });
  const argmax = (p) => p.reduce((best, x, k) => (x > p[best] ? k : best), 0);
  return probs.filter((p, i) => argmax(p) === val.labels[i]).length / val.labels.length;
}

/** Train on the cached features; posts a progress message per step; stops early on cancel. probe: the
 * recipe's classifier names when the head is fitted first (head_init probe), else null. */
async function train({ epochs, lr, warmup, probe, seed, featureSize }) {
  cancel = false;
  log.length = 0;
  const headFit = probe ? await fitCachedHead(probe, featureSize) : null;
  const n = labels.length;
  const plan = epochPlan(n, meta.batch, epochs, seed, views.count);
  const history = []; // per epoch: loss, train and validation accuracy (the report's curve)
  const total = plan.length;
  const warm = warmup ?? defaultWarmup(total);
  const shapes = inputShapes('train_features');
  let epochLoss = 0;
  let epochCorrect = 0;
  let epochRows = 0;
  const t0 = performance.now();
  for (let step = 0; step < total; step++) {
    if (cancel) return { cancelled: true, steps: step, log, headFit, history };
    const { epoch, rows, views: picks } = plan[step];
    const rate = cosineLr(lr, step, total, warm);
    const s0 = performance.now();
    const { loss, correct } = await trainStep(rows, picks, rate, shapes, featureSize);
    const ms = performance.now() - s0;
    if (!Number.isFinite(loss)) return { failed: `loss is ${loss} at step ${step + 1}: lower the learning rate`, steps: step, log, history };
    log.push({ step, epoch, rows, views: picks, lr: rate, loss, ms });
    epochLoss += loss * rows.length;
    epochCorrect += correct;
    epochRows += rows.length;
    const epochEnd = step + 1 === total || plan[step + 1].epoch !== epoch;
    if (epochEnd) {
      history.push({ epoch: epoch + 1, steps: step + 1, loss: epochLoss / epochRows, trainAccuracy: epochCorrect / epochRows,
        valAccuracy: await valAccuracy(featureSize) });
    }
    self.postMessage({ op: 'progress', step: step + 1, total, epoch: epoch + 1, epochs, loss, lr: rate,
      epochLoss: epochLoss / epochRows, epochAcc: epochCorrect / epochRows, epochEnd, history: epochEnd ? history : null });
    if (epochEnd) epochLoss = epochCorrect = epochRows = 0;
    await yieldToEvents();
  }
  return { cancelled: false, steps: total, log, headFit, history, seconds: (performance.now() - t0) / 1000 };
}

async function predict({ images, count }) {
  const { features: f, featureSize } = await extract({ images, count });
  return predictFeatures({ features: f, count, featureSize });
}

/** `infer_features` over n cached feature rows (padded batches): probabilities per row. */
async function predictFeatures({ features: f, count, featureSize }) {
  const B = meta.batch;
  const shape = inputShapes('infer_features').features;
  const result = [];
  for (let start = 0; start < count; start += B) {
    const rows = Array.from({ length: Math.min(B, count - start) }, (_, i) => start + i);
    const out = await run('infer_features', { features: { data: padRows(f, featureSize, rows, B), shape } });
    const K = out.probabilities.data.length / B;
    rows.forEach((_, i) => result.push(out.probabilities.data.slice(i * K, (i + 1) * K)));
  }
  return result;
}

/** Every state tensor, by name (the token input is ignored by the graph: since tftl-2). */
function save() {
  return run('save', { token: { data: new Float32Array([0]), shape: inputShapes('save').token } });
}

async function restore({ state, optimizer = [] }) {
  const shapes = inputShapes('restore');
  const inputs = {};
  if (optimizer.length && optimizer.every((n) => !state[n])) {
    // A deployable fine-tuned file carries no optimizer state: keep the interpreter's own.
    const own = await save();
    state = { ...state };
    for (const n of optimizer) state[n] = own[n];
  }
  for (const [name, shape] of Object.entries(shapes)) {
    if (!state[name]) throw new Error(`the saved state has no tensor ${name} — it is from another model; train again`);
    const n = shape.reduce((a, b) => a * b, 1);
    if (state[name].data.length !== n) throw new Error(`the saved tensor ${name} has ${state[name].data.length} values, the model needs ${n} — train again`);
    inputs[name] = { data: Float32Array.from(state[name].data), shape };
  }
  const out = await run('restore', inputs);
  if (out.ok.data[0] !== 1) throw new Error('restore refused the state (non-finite values) — train again');
  return true;
}

const ops = {
  load,
  setData: async (msg) => { views = msg.views; labels = msg.labels; val = msg.val; return labels.length; },
  extract,
  train,
  predict,
  predictFeatures,
  save,
  restore,
};

self.onmessage = async (event) => {
  const msg = event.data;
  if (msg.op === 'cancel') {
    cancel = true;
    return;
  }
  try {
    self.postMessage({ id: msg.id, result: await ops[msg.op](msg) });
  } catch (e) {
    self.postMessage({ id: msg.id, error: String(e && e.message ? e.message : e) });
  }
};

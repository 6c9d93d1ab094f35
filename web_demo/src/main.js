// The page: open a model, add photos per class, train in the worker, predict, keep the
// result (IndexedDB) and download it as a tftl-train style .tflite.
import { readModel, writeModel, missingSignatures, optimizerNames, recipeOf, ModelFileError } from './modelfile.js';
import { resolveRecipe } from './schedule.js';
import { loadImage, loadViews, FORMAT_HINT } from './preprocess.js';
import { encodeRows, decodeRow } from './half.js';
import { saveSession, loadSession, archiveSession, unarchiveSession, hasArchivedSession, MAX_STORED_FEATURE_BYTES } from './store.js';
import { initSessions, refreshSessions } from './sessions.js';
import { drawAccuracy, accuracyPng, reportZip } from './report.js';

const $ = (id) => document.getElementById(id);
const worker = new Worker(new URL('worker.js', import.meta.url));
const pending = new Map();
let nextId = 1;
let onProgress = () => {};

// Threads need SharedArrayBuffer, which needs cross-origin isolation (serve.mjs sends the headers).
const params = new URLSearchParams(location.search);
const THREADS = self.crossOriginIsolated ? Number(params.get('threads') || Math.min(4, navigator.hardwareConcurrency || 1)) : 1;

worker.onmessage = (e) => {
  const msg = e.data;
  if (msg.op === 'progress') return onProgress(msg);
  const p = pending.get(msg.id);
  pending.delete(msg.id);
  if (msg.error) p.reject(new Error(msg.error));
  else p.resolve(msg.result);
};

function call(op, args = {}, transfer = []) {
  const id = nextId++;
  return new Promise((resolve, reject) => {
    pending.set(id, { resolve, reject });
    worker.postMessage({ id, op, ...args }, transfer);
  });
}

// Refuse nonsense, and hold out a validation part (stated on the page and in README.md).
const MIN_CLASSES = 2;
// Photos per class: measured with tftl-train on flowers5 (web_demo/README.md, "Photos per class").
const MIN_PER_CLASS = 5;
const HOLDOUT_FROM = 5; // every class with photos has >= 5: every 5th photo of each class is held out
const HOLDOUT_EVERY = 5;

const app = {
  model: null, // readModel's result + name
  featureSize: 0,
  features: [], // Float32Array per photo: its centre view's features (validation, and "Try it")
  views: [], // per photo, its augmented views' features: {data: Uint16Array (float16), scales: Float32Array}
  photoSeq: 0, // photos read so far: photo k's augmented views are drawn from seeds (k, view)
  sampleLabels: [], // class index per photo
  trainedSteps: 0,
  lastRun: null,
  busy: false,
  photoBatches: 0, // file selections handled (tests wait on it)
  undo: null, // {state, trainedSteps, lastRun} before the last kept run ("Undo last run")
  stopExtract: false,
  extractChunks: 0, // worker extract calls of the last selection (tests check the chunking)
  persistAsked: false,
  tries: 0, // "Try it" picks handled (tests wait on it)
  thumbs: {}, // class index -> small JPEG Blobs (stored with the session)
  sessionName: null, // the saved session this one was loaded from or saved as
  unsaved: false, // changed since it was saved under its name (or never saved)
};

/** An error next to the step that caused it (model, photos, train, predict, keep, sessions); '' clears it. */
function showError(step, message) {
  const box = $(`error-${step}`);
  box.querySelector('span').textContent = message;
  box.hidden = !message;
  if (message) box.scrollIntoView({ block: 'nearest' });
}

const fail = (step) => (e) => {
  showError(step, `${e && e.message ? e.message : e}`);
  setBusy(false);
};
function showModel() {
  showMeta();
  showRecipe();
  $('labels').textContent = app.model.labels.join(', ');
  $('model-info').hidden = false;
  buildClassRows();
  for (const id of ['photos-section', 'train-section', 'predict-section', 'keep-section']) $(id).hidden = false;
  setBusy(app.busy);
}

/** The file's recipe in the settings: its learning rate, and its epochs (empty: the recipe's rule for the photos). */
function showRecipe() {
  const r = recipeOf(app.model.meta);
  $('lr').value = r.lr;
  $('epochs').value = r.min_steps ? '' : r.epochs;
  $('epochs').placeholder = r.min_steps ? `recipe: ≥ ${r.epochs}, ≥ ${r.min_steps} steps` : 'recipe';
  $('view-count').textContent = r.cache_views;
}

function showMeta() {
  const { meta } = app.model;
  const rows = [
    ['file', app.model.name], ['model', `${meta.model}, ${meta.scheme}, ${meta.blocks} blocks`],
    ['input', `${meta.image_size} × ${meta.image_size} RGB, batch ${meta.batch}`],
    ['features', meta.feature_shape.join(' × ')], ['trained params', meta.trainable_params],
    ['format', meta.format], ['fine-tuned', fineTuned()],
    ['threads', THREADS],
  ];
  $('meta').replaceChildren(...rows.map(([k, v]) => {
    const tr = document.createElement('tr');
    tr.append(Object.assign(document.createElement('td'), { textContent: k }),
      Object.assign(document.createElement('td'), { textContent: String(v) }));
    return tr;
  }));
}

function fineTuned() {
  if (app.trainedSteps) return `yes (${app.trainedSteps} steps in this browser${app.model.meta.trained_state ? ', on a fine-tuned file' : ''})`;
  return app.model.meta.trained_state ? 'yes (state.npz restored)' : 'no';
}

function buildClassRows() {
  $('classes').replaceChildren(...app.model.labels.map((label, i) => {
    const row = document.createElement('div');
    row.className = 'class-row';
    row.innerHTML = `<span class="name"></span><input type="file" multiple accept="image/*" data-class="${i}">
      <button data-camera="${i}" title="webcam">Camera</button>
      <span class="count" data-count="${i}"></span><span class="thumbs" data-thumbs="${i}"></span>`;
    row.querySelector('.name').textContent = label;
    row.querySelector('input').addEventListener('change', (e) => {
      const files = [...e.target.files];
      e.target.value = ''; // picking the same file again fires change again
      addPhotos(i, files).catch(fail('photos'));
    });
    row.querySelector('button').addEventListener('click', () => openCamera(i).catch(fail('photos')));
    return row;
  }));
  updateCounts();
}

function updateCounts() {
  app.model.labels.forEach((_, i) => {
    const n = app.sampleLabels.filter((l) => l === i).length;
    const el = document.querySelector(`[data-count="${i}"]`);
    if (el) el.textContent = `${n} photo${n === 1 ? '' : 's'}`;
  });
  $('extract-status').textContent = `${app.features.length} photos with cached features`;
}

async function openModel(file) {
  if (app.model && (app.trainedSteps || app.features.length)) {
    const what = `${app.features.length} photos, ${app.trainedSteps} trained steps`;
    if (!confirm(`Open ${file.name}? It replaces this session (${what}); "Bring back the previous session" undoes it.`)) return;
  }
  const bytes = new Uint8Array(await file.arrayBuffer());
  const model = await readModel(bytes, file.name);
  const missing = missingSignatures(model);
  if (missing.length) {
    throw new ModelFileError(`${file.name} has no ${missing.join(', ')} signature(s), so it cannot train here — export it with python -m converters.export`);
  }
  if (app.model) await archiveSession();
  await startModel({ ...model, name: file.name });
  if (model.state) await call('restore', { state: model.state, optimizer: optimizerNames(model.meta) });
  Object.assign(app, { features: [], views: [], photoSeq: 0, sampleLabels: [], trainedSteps: 0, lastRun: null, undo: null, thumbs: {},
    sessionName: null });
  showModel();
  showRun();
  showError('model', '');
  await persist();
  await showUndoSession();
}

async function showUndoSession() {
  $('undo-session').hidden = !(await hasArchivedSession());
}

async function startModel(model) {
  app.model = model;
  const flatbuffer = model.flatbuffer.slice().buffer;
  const info = await call('load', { flatbuffer, metadata: model.meta, threads: THREADS }, [flatbuffer]);
  app.signatures = info.signatures;
}

/** The recipe's augmented views per photo (tftl.json recipe.cache_views). */
const viewCount = () => recipeOf(app.model.meta).cache_views;

/** Preprocess one chunk of files into pixels, per photo its centre view then `views` augmented
 * ones (bounded: (1 + views) x batch images); unreadable ones are skipped and named. */
async function preprocessChunk(files, size, views, onEach) {
  const R = (1 + views) * size * size * 3;
  const images = new Float32Array(files.length * R);
  const good = [];
  const skipped = [];
  for (const file of files) {
    if (app.stopExtract) break;
    try {
      images.set(await loadViews(file, size, views, app.photoSeq++), good.length * R);
      good.push(file);
    } catch (e) {
      skipped.push(e.message);
    }
    onEach();
  }
  return { images: images.subarray(0, good.length * R), good, skipped };
}

/** Photos go through preprocessing and `extract` one batch at a time (bounded memory), with
 * progress; Cancel stops between photos and keeps the photos already done. */
async function addPhotos(classIndex, files) {
  if (!files.length) return;
  const { meta } = app.model;
  setBusy(true);
  app.stopExtract = false;
  app.extractChunks = 0;
  $('extract-progress').hidden = false;
  const skipped = [];
  let done = 0;
  let added = 0;
  try {
    for (let start = 0; start < files.length && !app.stopExtract; start += meta.batch) {
      const chunk = await preprocessChunk(files.slice(start, start + meta.batch), meta.image_size, viewCount(), () => {
        done += 1;
        $('extract-progress').value = done / files.length;
        $('extract-status').textContent = `preparing photo ${done}/${files.length}…`;
      });
      skipped.push(...chunk.skipped);
      if (chunk.good.length) await extractChunk(classIndex, chunk);
      added += chunk.good.length;
    }
    const stopped = app.stopExtract ? `cancelled: added ${added} of ${files.length} photos` : '';
    const named = skipped.map((m) => m.replace(FORMAT_HINT, '')).join('; ');
    showError('photos', skipped.length ? `skipped ${skipped.length} unreadable photo(s): ${named}${FORMAT_HINT}` : '');
    updateCounts();
    if (stopped) $('extract-status').textContent += ` — ${stopped}`;
    if (added) await persist();
  } finally {
    $('extract-progress').hidden = true;
    app.photoBatches += 1;
    setBusy(false);
  }
}

async function extractChunk(classIndex, { images, good }) {
  const per = 1 + viewCount();
  // the pixels move to the worker (transferred, not copied): this chunk's largest array
  const { features, featureSize: F } = await call('extract', { images, count: good.length * per }, [images.buffer]);
  app.extractChunks += 1;
  app.featureSize = F;
  for (let i = 0; i < good.length; i++) {
    app.features.push(features.slice(i * per * F, (i * per + 1) * F));
    app.views.push(encodeRows(features.subarray((i * per + 1) * F, (i + 1) * per * F), per - 1, F));
    app.sampleLabels.push(classIndex);
  }
  await addThumbs(classIndex, good);
}

/** Up to 8 thumbnails per class, kept as small JPEGs so a reload shows them again. */
async function addThumbs(classIndex, files, stored = false) {
  const box = document.querySelector(`[data-thumbs="${classIndex}"]`);
  for (const f of files.slice(0, 8 - box.children.length)) {
    const thumb = stored ? f : await smallJpeg(f).catch(() => null);
    if (!thumb) continue;
    if (!stored) (app.thumbs[classIndex] ||= []).push(thumb);
    const img = document.createElement('img');
    img.src = URL.createObjectURL(thumb);
    box.append(img);
  }
}

async function smallJpeg(file) {
  const bitmap = await createImageBitmap(file);
  const side = Math.min(bitmap.width, bitmap.height);
  const canvas = new OffscreenCanvas(64, 64);
  canvas.getContext('2d').drawImage(bitmap, (bitmap.width - side) / 2, (bitmap.height - side) / 2, side, side, 0, 0, 64, 64);
  bitmap.close();
  return canvas.convertToBlob({ type: 'image/jpeg', quality: 0.8 });
}

// Webcam: frames become lossless PNG files, then go through the same path as picked files.
const camera = { stream: null, classIndex: 0 };

async function openCamera(classIndex) {
  camera.classIndex = classIndex;
  $('camera-class').textContent = app.model.labels[classIndex];
  if (!camera.stream) {
    camera.stream = await navigator.mediaDevices.getUserMedia({ video: true, audio: false });
    $('camera-video').srcObject = camera.stream;
  }
  $('camera').hidden = false;
}

function closeCamera() {
  if (camera.stream) camera.stream.getTracks().forEach((t) => t.stop());
  camera.stream = null;
  $('camera').hidden = true;
}

async function takePhoto() {
  const video = $('camera-video');
  const canvas = new OffscreenCanvas(video.videoWidth, video.videoHeight);
  canvas.getContext('2d').drawImage(video, 0, 0);
  const blob = await canvas.convertToBlob({ type: 'image/png' });
  const file = new File([blob], `camera-${Date.now()}.png`, { type: 'image/png' });
  await addPhotos(camera.classIndex, [file]);
}

function setBusy(busy) {
  app.busy = busy;
  for (const el of document.querySelectorAll('input, #train, #camera-shot, [data-camera], #forget, #undo-session, #sessions button')) el.disabled = busy;
  $('cancel').disabled = !busy;
  $('extract-cancel').disabled = !busy;
  $('download').disabled = busy || !(app.trainedSteps || (app.model && app.model.meta.trained_state));
  $('revert').disabled = busy || !app.undo;
  $('report').disabled = busy || !(app.lastRun && app.lastRun.history && app.lastRun.history.length);
  $('session-save').disabled = busy || !app.model;
}

/** The training photos' views for the worker: {data, scales, count}, photo-major, `count` views each
 * (the fewest any photo has: a session restored from before views were cached has its centre view). */
function concatViews(rows) {
  const F = app.featureSize;
  const count = Math.min(...rows.map((r) => app.views[r].scales.length));
  const data = new Uint16Array(rows.length * count * F);
  const scales = new Float32Array(rows.length * count);
  rows.forEach((r, i) => {
    data.set(app.views[r].data.subarray(0, count * F), i * count * F);
    scales.set(app.views[r].scales.subarray(0, count), i * count);
  });
  return { data, scales, count };
}

/** Every photo's views as float32 [photos, views, featureSize] (tests compare them with Python). */
function viewFeatures() {
  const F = app.featureSize;
  const V = app.views.length ? Math.min(...app.views.map((v) => v.scales.length)) : 0;
  const out = new Float32Array(app.views.length * V * F);
  app.views.forEach((v, i) => { for (let k = 0; k < V; k++) decodeRow(v, k, F, out, (i * V + k) * F); });
  return out;
}

function concatFeatures(rows = app.features.map((_, i) => i)) {
  const all = new Float32Array(rows.length * app.featureSize);
  rows.forEach((r, i) => all.set(app.features[r], i * app.featureSize));
  return all;
}

/** Photos per class, checked against the minimums; every 5th photo of each class is held out
 * for validation once every class with photos has HOLDOUT_FROM. Returns row indices. */
function splitData() {
  const labels = app.model.labels;
  const counts = labels.map((_, k) => app.sampleLabels.filter((l) => l === k).length);
  const used = counts.map((n, k) => [n, k]).filter(([n]) => n > 0);
  if (used.length < MIN_CLASSES) throw new Error(`training needs photos in at least ${MIN_CLASSES} classes (now ${used.length})`);
  const few = used.filter(([n]) => n < MIN_PER_CLASS).map(([n, k]) => `${labels[k]} has ${n}`);
  if (few.length) throw new Error(`training needs at least ${MIN_PER_CLASS} photos in each class with photos: ${few.join(', ')} — add more`);
  const holdOut = used.every(([n]) => n >= HOLDOUT_FROM);
  const seen = labels.map(() => 0);
  const train = [];
  const val = [];
  app.sampleLabels.forEach((l, i) => ((holdOut && seen[l]++ % HOLDOUT_EVERY === HOLDOUT_EVERY - 1) ? val : train).push(i));
  return { train, val };
}

/** Why a run must not be kept: a non-finite loss, or the loss of its last quarter above twice
 * the first step's (the state the run started from) and above half of ln(classes). */
function divergence(run, classes) {
  if (run.failed) return run.failed;
  const losses = run.log.map((s) => s.loss);
  const q = Math.floor(losses.length / 4);
  if (q < 2) return '';
  const last = losses.slice(-q).reduce((a, b) => a + b, 0) / q;
  const blown = last > 2 * losses[0] && last > 0.5 * Math.log(classes);
  return blown ? `the loss rose from ${losses[0].toFixed(3)} to ${last.toFixed(3)} (diverged): lower the learning rate` : '';
}

/** The run's settings: the fields, each empty one from the file's recipe (as tftl-train's flags); `rows` training photos. */
function readSettings(rows) {
  const recipe = resolveRecipe(recipeOf(app.model.meta), rows, app.model.meta.batch);
  const epochs = $('epochs').value === '' ? recipe.epochs : Number($('epochs').value);
  const lr = $('lr').value === '' ? recipe.lr : Number($('lr').value);
  // A typed value is bounded as before; the recipe's own epochs are bounded by contract.Recipe.
  if (!(Number.isInteger(epochs) && epochs >= 1 && (epochs <= 200 || $('epochs').value === ''))) throw new Error('epochs must be a whole number 1..200');
  if (!(lr > 0 && lr <= 1)) throw new Error('learning rate must be in (0, 1]');
  const warmup = recipeOf(app.model.meta).warmup_steps;
  // head_init probe: the head is fitted first on a fresh model (not when a run continues this browser's training).
  const probe = recipe.head_init === 'probe' && !app.trainedSteps ? recipe.classifier : null;
  return { epochs, lr, warmup, probe };
}

async function train() {
  const { train: rows, val } = splitData();
  const { epochs, lr, warmup, probe } = readSettings(rows.length);
  setBusy(true);
  $('train-status').textContent = 'starting…';
  $('progress').value = 0;
  const losses = [];
  onProgress = (p) => {
    losses.push(p.loss);
    if (p.history) drawAccuracy($('acc-chart'), p.history);
    $('progress').value = p.step / p.total;
    $('train-status').textContent = `epoch ${p.epoch}/${p.epochs} · step ${p.step}/${p.total} · loss ${p.loss.toFixed(4)}`
      + ` · epoch loss ${p.epochLoss.toFixed(4)} · train accuracy ${(100 * p.epochAcc).toFixed(1)}%`;
    drawChart(losses);
  };
  try {
    const before = { state: await call('save'), trainedSteps: app.trainedSteps, lastRun: app.lastRun && { ...app.lastRun, log: undefined, trainRows: undefined } };
    const views = concatViews(rows);
    await call('setData', { views, labels: Int32Array.from(rows, (r) => app.sampleLabels[r]),
      val: { features: concatFeatures(val), labels: Int32Array.from(val, (r) => app.sampleLabels[r]) } });
    const run = await call('train', { epochs, lr, warmup, probe, seed: app.trainedSteps, featureSize: app.featureSize });
    app.lastAttempt = run.log.map((st) => st.loss);
    const bad = divergence(run, app.model.labels.length) || await nonFiniteState();
    if (bad) return await rollBack(before, bad);
    const valAccuracy = val.length ? await evaluate(val) : null;
    const what = run.cancelled ? `cancelled after ${run.steps} steps` : `done: ${run.steps} steps in ${run.seconds.toFixed(1)} s`;
    $('train-status').textContent += ` — ${what}`;
    app.undo = before;
    app.trainedSteps += run.steps;
    app.lastRun = { epochs, lr, steps: run.steps, log: run.log, trainRows: rows, classes: classCounts(rows, val), losses, valAccuracy, headFit: run.headFit,
      valCount: val.length, views: views.count, history: run.history, status: $('train-status').textContent };
    showRun();
    showMeta();
    showError('train', '');
    await persist();
  } finally {
    setBusy(false);
  }
}

/** A step can leave NaN in the weights with a finite loss (NaN features): check the state itself. */
async function nonFiniteState() {
  const state = await call('save');
  const bad = Object.keys(state).filter((name) => !state[name].data.every(Number.isFinite));
  return bad.length ? `the run left non-finite values in ${bad.length} state tensor(s) (${bad[0]}, …)` : '';
}

/** Put back the state from before a run that must not be kept, and say so where the user looks. */
async function rollBack(before, why) {
  await call('restore', { state: before.state });
  $('train-status').textContent += ` — rolled back to the state before this run (${before.trainedSteps} steps)`;
  showError('train', `${why}; the run was rolled back`);
  app.rolledBack = (app.rolledBack || 0) + 1;
  drawChart(app.lastRun ? app.lastRun.losses || [] : []);
  drawAccuracy($('acc-chart'), app.lastRun ? app.lastRun.history : []);
}

/** Accuracy of infer_features on held-out rows. */
async function evaluate(rows) {
  const probs = await call('predictFeatures', { features: concatFeatures(rows), count: rows.length, featureSize: app.featureSize });
  const argmax = (p) => p.reduce((best, v, k) => (v > p[best] ? k : best), 0);
  return rows.filter((r, i) => argmax(probs[i]) === app.sampleLabels[r]).length / rows.length;
}

/** The last kept run: settings, status line, validation accuracy and chart (also after a reload). */
function showRun() {
  const run = app.lastRun;
  $('val-status').textContent = !run ? '' : run.valAccuracy === null || run.valAccuracy === undefined
    ? 'no validation accuracy: hold-out needs 5 or more photos in every class with photos'
    : `validation accuracy ${(100 * run.valAccuracy).toFixed(1)}% on ${run.valCount} held-out photos (never trained on)`;
  drawAccuracy($('acc-chart'), run ? run.history : []);
  if (!run) return drawChart([]);
  $('epochs').value = run.epochs;
  $('lr').value = run.lr;
  $('train-status').textContent = run.status || '';
  drawChart(run.losses || []);
}

async function revertLastRun() {
  const { state, trainedSteps, lastRun } = app.undo;
  setBusy(true);
  try {
    await call('restore', { state });
    Object.assign(app, { trainedSteps, lastRun, undo: null });
    showRun();
    showMeta();
    $('train-status').textContent = `reverted to the state before the last run (${trainedSteps} steps)`;
    await persist();
  } finally {
    setBusy(false);
  }
}

function drawChart(losses) {
  const c = $('chart');
  const ctx = c.getContext('2d');
  ctx.clearRect(0, 0, c.width, c.height);
  if (!losses.length) return;
  const max = Math.max(...losses, 1e-6);
  ctx.strokeStyle = '#36c';
  ctx.beginPath();
  losses.forEach((l, i) => {
    const x = (i / Math.max(1, losses.length - 1)) * (c.width - 10) + 5;
    const y = c.height - 5 - (l / max) * (c.height - 20);
    if (i) ctx.lineTo(x, y); else ctx.moveTo(x, y);
  });
  ctx.stroke();
  ctx.fillStyle = '#666';
  ctx.fillText(`loss (max ${max.toFixed(3)})`, 8, 12);
}

async function predictFile(file) {
  $('predict-img').removeAttribute('src');
  $('top3').replaceChildren();
  const image = await loadImage(file, app.model.meta.image_size);
  const [probs] = await call('predict', { images: image, count: 1 }, [image.buffer]);
  const top = Array.from(probs, (p, i) => [p, i]).sort((a, b) => b[0] - a[0]).slice(0, 3);
  $('predict-img').src = URL.createObjectURL(file);
  $('top3').replaceChildren(...top.map(([p, i]) => Object.assign(document.createElement('li'), {
    textContent: `${app.model.labels[i]} ${(100 * p).toFixed(1)}%`,
  })));
  showError('predict', '');
  return top.map(([p, i]) => ({ label: app.model.labels[i], probability: p }));
}

/** The session record as IndexedDB keeps it (features, views and thumbnails only up to MAX_STORED_FEATURE_BYTES). */
async function sessionRecord() {
  const state = app.trainedSteps ? await call('save') : null;
  const viewBytes = app.views.reduce((sum, v) => sum + v.data.byteLength + v.scales.byteLength, 0);
  const small = app.features.length * app.featureSize * 4 + viewBytes <= MAX_STORED_FEATURE_BYTES;
  return {
    modelBytes: app.model.bytes, modelName: app.model.name, state, trainedSteps: app.trainedSteps,
    lastRun: app.lastRun && { ...app.lastRun, log: undefined, trainRows: undefined }, undo: app.undo,
    thumbs: small ? app.thumbs : {}, featureSize: app.featureSize, sampleLabels: small ? app.sampleLabels : [],
    features: small ? concatFeatures() : null, views: small ? app.views : [], photoSeq: app.photoSeq,
    savedAs: app.sessionName, unsaved: app.unsaved,
  };
}

/** Keep the session after a change (it is then unsaved under its name). */
async function persist() {
  askPersistentStorage();
  app.unsaved = true;
  await saveSession(await sessionRecord());
  $('keep-status').textContent = `saved in this browser at ${new Date().toLocaleTimeString()}`
    + (app.trainedSteps ? ` (trained ${app.trainedSteps} steps)` : '');
  showError('keep', '');
  await refreshSessions();
}

/** Ask once that the browser keep this site's storage (a reload still restores without it). */
function askPersistentStorage() {
  if (app.persistAsked || !navigator.storage || !navigator.storage.persist) return;
  app.persistAsked = true;
  navigator.storage.persist().then((granted) => { app.persistGranted = granted; }, () => {});
}

async function resume() {
  await showUndoSession();
  const s = await loadSession();
  if (!s) return false;
  const model = await readModel(s.modelBytes, s.modelName);
  await startModel({ ...model, name: s.modelName });
  if (s.state) await call('restore', { state: s.state });
  else if (model.state) await call('restore', { state: model.state, optimizer: optimizerNames(model.meta) });
  app.featureSize = s.featureSize;
  app.trainedSteps = s.trainedSteps;
  app.lastRun = s.lastRun || null;
  app.undo = s.undo || null;
  app.sampleLabels = s.sampleLabels;
  app.features = app.sampleLabels.map((_, i) => s.features.slice(i * s.featureSize, (i + 1) * s.featureSize));
  // a session kept before the views were cached trains on its centre views
  app.views = s.views && s.views.length === app.features.length ? s.views : app.features.map((f) => encodeRows(f, 1, s.featureSize));
  app.photoSeq = s.photoSeq || app.features.length;
  app.sessionName = s.savedAs || null;
  app.unsaved = Boolean(s.unsaved);
  app.thumbs = s.thumbs || {};
  showModel();
  for (const [k, blobs] of Object.entries(app.thumbs)) await addThumbs(Number(k), blobs, true);
  showRun();
  setBusy(false);
  $('keep-status').textContent = `restored from this browser: ${app.features.length} photos, trained ${app.trainedSteps} steps`
    + (app.sessionName ? ` (saved session "${app.sessionName}"${app.unsaved ? ', changed since' : ''})` : '');
  await refreshSessions();
  return true;
}

/** Hand `bytes` to the browser as a download named after the model (+ `suffix`); returns the name. */
function saveBytes(bytes, suffix, type) {
  const a = document.createElement('a');
  a.href = URL.createObjectURL(new Blob([bytes], { type }));
  a.download = app.model.name.replace(/(_finetuned)?\.tflite$/, '') + suffix;
  document.body.append(a);
  a.click();
  a.remove();
  return a.download;
}

async function download() {
  const state = await call('save');
  const training = {
    host: 'web_demo (LiteRT.js)', steps: app.trainedSteps, images: app.features.length,
    learning_rate: app.lastRun ? app.lastRun.lr : null, epochs: app.lastRun ? app.lastRun.epochs : null,
  };
  const bytes = await writeModel(app.model, app.model.labels, state, training);
  const name = saveBytes(bytes, '_finetuned.tflite', 'application/octet-stream');
  $('keep-status').textContent = `downloaded ${name} (${(bytes.length / 1e6).toFixed(1)} MB, ${app.trainedSteps} steps)`;
  showError('keep', '');
}

/** Photos per class in a run: trained on (`rows`) and held out (`val`). */
function classCounts(rows, val) {
  return app.model.labels.map((name, k) => {
    const [trained, heldOut] = [rows, val].map((rs) => rs.filter((r) => app.sampleLabels[r] === k).length);
    return { name, photos: trained + heldOut, trained, heldOut };
  });
}

/** "Download report": report.json, report.md and the accuracy curve as accuracy.png, in one ZIP. */
async function downloadReport() {
  const run = app.lastRun;
  const report = {
    model: app.model.name, createdAt: new Date().toISOString(), classes: run.classes,
    run: { epochs: run.epochs, lr: run.lr, steps: run.steps, views: run.views || 1, totalSteps: app.trainedSteps,
      validationPhotos: run.valCount, validationAccuracy: run.valAccuracy },
    history: run.history,
  };
  const png = await accuracyPng(run.history, `${app.model.name}: accuracy per epoch`);
  const name = saveBytes(await reportZip(report, png), '_report.zip', 'application/zip');
  $('keep-status').textContent = `downloaded ${name} (${run.history.length} epochs, ${app.features.length} photos)`;
  showError('keep', '');
}

async function forget() {
  if (!confirm('Forget this session (model, photos, trained state)? "Bring back the previous session" undoes it.')) return;
  await archiveSession();
  location.reload();
}

async function undoSession() {
  if (app.model && !confirm('Bring back the previous session? This one is kept as the previous session in turn.')) return;
  await unarchiveSession();
  location.reload();
}

/** A file input that also fires when the same file is picked again. */
function onFile(id, fn) {
  $(id).addEventListener('change', (e) => {
    const file = e.target.files[0];
    e.target.value = '';
    if (file) fn(file);
  });
}

function wire() {
  $('min-per-class').textContent = MIN_PER_CLASS;
  onFile('model-file', (f) => openModel(f).catch(fail('model')));
  const drop = $('drop');
  drop.addEventListener('dragover', (e) => { e.preventDefault(); drop.classList.add('over'); });
  drop.addEventListener('dragleave', () => drop.classList.remove('over'));
  drop.addEventListener('drop', (e) => {
    e.preventDefault();
    drop.classList.remove('over');
    if (e.dataTransfer.files[0]) openModel(e.dataTransfer.files[0]).catch(fail('model'));
  });
  for (const box of document.querySelectorAll('.error')) box.querySelector('.dismiss').addEventListener('click', () => { box.hidden = true; });
  $('camera-shot').addEventListener('click', () => takePhoto().catch(fail('photos')));
  $('camera-close').addEventListener('click', closeCamera);
  $('extract-cancel').addEventListener('click', () => { app.stopExtract = true; });
  $('train').addEventListener('click', () => train().catch(fail('train')));
  $('cancel').addEventListener('click', () => worker.postMessage({ op: 'cancel' }));
  $('revert').addEventListener('click', () => revertLastRun().catch(fail('train')));
  onFile('predict-file', (f) => predictFile(f).catch(fail('predict')).finally(() => { app.tries += 1; }));
  $('download').addEventListener('click', () => download().catch(fail('keep')));
  $('report').addEventListener('click', () => downloadReport().catch(fail('keep')));
  $('forget').addEventListener('click', () => forget().catch(fail('keep')));
  $('undo-session').addEventListener('click', () => undoSession().catch(fail('model')));
}

// For tests and benchmarks (tests/test_web.py): the same functions the UI uses.
window.tftlDemo = {
  app, call, loadImage, predictFile, encodeRows,
  ready: null,
  // the last run's steps, rows as indices into features() (the run trains on the non-held-out rows)
  runLog: () => app.lastRun && app.lastRun.log && app.lastRun.log.map((st) => ({ ...st, rows: st.rows.map((r) => app.lastRun.trainRows[r]) })),
  features: () => concatFeatures(),
  viewFeatures,
  lastLosses: () => app.lastAttempt || [],
};

wire();
initSessions({
  app, fail: fail('sessions'), showError,
  summary: () => ({ modelName: app.model.name, photos: app.features.length, steps: app.trainedSteps }),
  record: sessionRecord,
});
window.tftlDemo.ready = resume().catch(fail('model')).then((restored) => {
  document.body.dataset.ready = restored ? 'restored' : 'empty';
});

// The page: open a model, add photos per class, train in the worker, predict, keep the
// result (IndexedDB) and download it as a tftl-train style .tflite.
import { readModel, writeModel, missingSignatures, optimizerNames, ModelFileError } from './modelfile.js';
import { loadImage } from './preprocess.js';
import { saveSession, loadSession, clearSession, MAX_STORED_FEATURE_BYTES } from './store.js';

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

const app = {
  model: null, // readModel's result + name
  featureSize: 0,
  features: [], // Float32Array per photo
  sampleLabels: [], // class index per photo
  trainedSteps: 0,
  lastRun: null,
  busy: false,
  photoBatches: 0, // file selections handled (tests wait on it)
};

function showError(message) {
  $('error').textContent = message;
  $('error').hidden = !message;
}

function showModel() {
  const { meta, labels } = app.model;
  const rows = [
    ['file', app.model.name], ['model', `${meta.model}, ${meta.scheme}, ${meta.blocks} blocks`],
    ['input', `${meta.image_size} × ${meta.image_size} RGB, batch ${meta.batch}`],
    ['features', meta.feature_shape.join(' × ')], ['trained params', meta.trainable_params],
    ['format', meta.format], ['fine-tuned', meta.trained_state ? 'yes (state.npz restored)' : 'no'],
    ['threads', THREADS],
  ];
  $('meta').replaceChildren(...rows.map(([k, v]) => {
    const tr = document.createElement('tr');
    tr.append(Object.assign(document.createElement('td'), { textContent: k }),
      Object.assign(document.createElement('td'), { textContent: String(v) }));
    return tr;
  }));
  $('labels').textContent = labels.join(', ');
  $('model-info').hidden = false;
  buildClassRows();
  for (const id of ['photos-section', 'train-section', 'predict-section', 'keep-section']) $(id).hidden = false;
}

function buildClassRows() {
  $('classes').replaceChildren(...app.model.labels.map((label, i) => {
    const row = document.createElement('div');
    row.className = 'class-row';
    row.innerHTML = `<span class="name"></span><input type="file" multiple accept="image/*" data-class="${i}">
      <button data-camera="${i}" title="webcam">Camera</button>
      <span class="count" data-count="${i}"></span><span class="thumbs" data-thumbs="${i}"></span>`;
    row.querySelector('.name').textContent = label;
    row.querySelector('input').addEventListener('change', (e) => addPhotos(i, [...e.target.files]).catch(fail));
    row.querySelector('button').addEventListener('click', () => openCamera(i).catch(fail));
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
  showError('');
  const bytes = new Uint8Array(await file.arrayBuffer());
  const model = await readModel(bytes, file.name);
  const missing = missingSignatures(model);
  if (missing.length) {
    throw new ModelFileError(`${file.name} has no ${missing.join(', ')} signature(s), so it cannot train here — export it with python -m converters.export`);
  }
  await startModel({ ...model, name: file.name });
  if (model.state) await call('restore', { state: model.state, optimizer: optimizerNames(model.meta) });
  app.features = [];
  app.sampleLabels = [];
  app.trainedSteps = 0;
  showModel();
  await persist();
}

async function startModel(model) {
  app.model = model;
  const flatbuffer = model.flatbuffer.slice().buffer;
  const info = await call('load', { flatbuffer, metadata: model.meta, threads: THREADS }, [flatbuffer]);
  app.signatures = info.signatures;
}

/** Preprocess files; unreadable ones are skipped and named (as tftl-train skips them). */
async function preprocessAll(files, size, onEach) {
  const R = size * size * 3;
  const images = new Float32Array(files.length * R);
  const good = [];
  const skipped = [];
  for (let i = 0; i < files.length; i++) {
    try {
      images.set(await loadImage(files[i], size), good.length * R);
      good.push(files[i]);
    } catch (e) {
      skipped.push(e.message);
    }
    onEach(i + 1);
  }
  return { images: images.slice(0, good.length * R), good, skipped };
}

async function addPhotos(classIndex, files) {
  if (!files.length) return;
  const { meta } = app.model;
  setBusy(true);
  try {
    const { images, good, skipped } = await preprocessAll(files, meta.image_size, (k) => {
      $('extract-status').textContent = `preparing photo ${k}/${files.length}…`;
    });
    if (skipped.length) showError(`skipped ${skipped.length} unreadable photo(s): ${skipped.join('; ')}`);
    if (!good.length) return;
    $('extract-status').textContent = `extracting features of ${good.length} photos…`;
    const { features, featureSize } = await call('extract', { images, count: good.length }, [images.buffer]);
    app.featureSize = featureSize;
    for (let i = 0; i < good.length; i++) {
      app.features.push(features.slice(i * featureSize, (i + 1) * featureSize));
      app.sampleLabels.push(classIndex);
    }
    addThumbs(classIndex, good);
    updateCounts();
    await persist();
  } finally {
    app.photoBatches += 1;
    setBusy(false);
  }
}

function addThumbs(classIndex, files) {
  const box = document.querySelector(`[data-thumbs="${classIndex}"]`);
  for (const f of files.slice(0, 8 - box.children.length)) {
    const img = document.createElement('img');
    img.src = URL.createObjectURL(f);
    box.append(img);
  }
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
  for (const el of document.querySelectorAll('input, #train, #download, #camera-shot, [data-camera]')) el.disabled = busy;
  $('cancel').disabled = !busy;
}

function concatFeatures() {
  const all = new Float32Array(app.features.length * app.featureSize);
  app.features.forEach((f, i) => all.set(f, i * app.featureSize));
  return all;
}

async function train() {
  if (!app.features.length) throw new Error('add photos to at least one class before training');
  const epochs = Number($('epochs').value);
  const lr = Number($('lr').value);
  if (!(epochs >= 1 && epochs <= 200)) throw new Error('epochs must be 1..200');
  if (!(lr > 0 && lr < 1)) throw new Error('learning rate must be between 0 and 1');
  setBusy(true);
  $('train-status').textContent = 'starting…';
  $('progress').value = 0;
  const losses = [];
  onProgress = (p) => {
    losses.push(p.loss);
    $('progress').value = p.step / p.total;
    $('train-status').textContent = `epoch ${p.epoch}/${p.epochs} · step ${p.step}/${p.total} · loss ${p.loss.toFixed(4)}`
      + ` · epoch loss ${p.epochLoss.toFixed(4)} · train accuracy ${(100 * p.epochAcc).toFixed(1)}%`;
    drawChart(losses);
  };
  try {
    await call('setData', { features: concatFeatures(), labels: Int32Array.from(app.sampleLabels) });
    const run = await call('train', { epochs, lr, seed: app.trainedSteps, featureSize: app.featureSize });
    app.lastRun = { epochs, lr, ...run };
    app.trainedSteps += run.steps;
    const what = run.failed ? `stopped: ${run.failed}` : run.cancelled ? `cancelled after ${run.steps} steps` : `done: ${run.steps} steps in ${run.seconds.toFixed(1)} s`;
    $('train-status').textContent += ` — ${what}`;
    if (run.failed) throw new Error(run.failed);
    await persist();
  } finally {
    setBusy(false);
  }
}

function drawChart(losses) {
  const c = $('chart');
  const ctx = c.getContext('2d');
  ctx.clearRect(0, 0, c.width, c.height);
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
  const image = await loadImage(file, app.model.meta.image_size);
  const [probs] = await call('predict', { images: image, count: 1 }, [image.buffer]);
  const top = Array.from(probs, (p, i) => [p, i]).sort((a, b) => b[0] - a[0]).slice(0, 3);
  $('predict-img').src = URL.createObjectURL(file);
  $('top3').replaceChildren(...top.map(([p, i]) => Object.assign(document.createElement('li'), {
    textContent: `${app.model.labels[i]} ${(100 * p).toFixed(1)}%`,
  })));
  return top.map(([p, i]) => ({ label: app.model.labels[i], probability: p }));
}

async function persist() {
  const state = app.trainedSteps ? await call('save') : null;
  const featureBytes = app.features.length * app.featureSize * 4;
  await saveSession({
    modelBytes: app.model.bytes, modelName: app.model.name, state, trainedSteps: app.trainedSteps,
    lastRun: app.lastRun && { epochs: app.lastRun.epochs, lr: app.lastRun.lr, steps: app.lastRun.steps },
    featureSize: app.featureSize, sampleLabels: featureBytes <= MAX_STORED_FEATURE_BYTES ? app.sampleLabels : [],
    features: featureBytes <= MAX_STORED_FEATURE_BYTES ? concatFeatures() : null,
  });
  $('keep-status').textContent = `saved in this browser at ${new Date().toLocaleTimeString()}`
    + (state ? ` (trained ${app.trainedSteps} steps)` : '');
}

async function resume() {
  const s = await loadSession();
  if (!s) return false;
  const model = await readModel(s.modelBytes, s.modelName);
  await startModel({ ...model, name: s.modelName });
  if (s.state) await call('restore', { state: s.state });
  else if (model.state) await call('restore', { state: model.state, optimizer: optimizerNames(model.meta) });
  app.featureSize = s.featureSize;
  app.trainedSteps = s.trainedSteps;
  app.lastRun = s.lastRun || null;
  app.sampleLabels = s.sampleLabels;
  app.features = app.sampleLabels.map((_, i) => s.features.slice(i * s.featureSize, (i + 1) * s.featureSize));
  showModel();
  $('keep-status').textContent = `restored from this browser: ${app.features.length} photos, trained ${app.trainedSteps} steps`;
  return true;
}

async function download() {
  const state = await call('save');
  const training = {
    host: 'web_demo (LiteRT.js)', steps: app.trainedSteps, images: app.features.length,
    learning_rate: app.lastRun ? app.lastRun.lr : null, epochs: app.lastRun ? app.lastRun.epochs : null,
  };
  const bytes = await writeModel(app.model, app.model.labels, state, training);
  const a = document.createElement('a');
  a.href = URL.createObjectURL(new Blob([bytes], { type: 'application/octet-stream' }));
  a.download = app.model.name.replace(/(_finetuned)?\.tflite$/, '') + '_finetuned.tflite';
  document.body.append(a);
  a.click();
  a.remove();
}

function fail(e) {
  showError(e instanceof ModelFileError ? e.message : `${e.message || e}`);
  setBusy(false);
}

function wire() {
  $('model-file').addEventListener('change', (e) => e.target.files[0] && openModel(e.target.files[0]).catch(fail));
  const drop = $('drop');
  drop.addEventListener('dragover', (e) => { e.preventDefault(); drop.classList.add('over'); });
  drop.addEventListener('dragleave', () => drop.classList.remove('over'));
  drop.addEventListener('drop', (e) => {
    e.preventDefault();
    drop.classList.remove('over');
    if (e.dataTransfer.files[0]) openModel(e.dataTransfer.files[0]).catch(fail);
  });
  $('camera-shot').addEventListener('click', () => takePhoto().catch(fail));
  $('camera-close').addEventListener('click', closeCamera);
  $('train').addEventListener('click', () => train().catch(fail));
  $('cancel').addEventListener('click', () => worker.postMessage({ op: 'cancel' }));
  $('predict-file').addEventListener('change', (e) => e.target.files[0] && predictFile(e.target.files[0]).catch(fail));
  $('download').addEventListener('click', () => download().catch(fail));
  $('forget').addEventListener('click', () => clearSession().then(() => location.reload(), fail));
}

// For tests and benchmarks (tests/test_web.py): the same functions the UI uses.
window.tftlDemo = {
  app, call, loadImage, predictFile,
  ready: null,
  runLog: () => app.lastRun && app.lastRun.log,
  features: () => concatFeatures(),
};

wire();
window.tftlDemo.ready = resume().catch(fail).then((restored) => {
  document.body.dataset.ready = restored ? 'restored' : 'empty';
});

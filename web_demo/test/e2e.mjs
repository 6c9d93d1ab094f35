// Drives the page in Debian's Chromium (playwright-core, never a downloaded browser) the
// way a person would: open the model, add photos per class, train, predict, reload,
// download. Writes what Python checks (tests/test_web.py) into OUT:
//   result.json       losses and rows of every step, timings, memory, top-3, restore checks
//   features.f32      the browser's cached centre-view features (float32, row-major [n, featureSize])
//   views.f32         its cached augmented views' features (float32, [n, views, featureSize])
//   images.f32        the browser's preprocessed pixels of the --compare photos
//   finetuned.tflite  the downloaded model
//   after_training.png  a screenshot of the page after training
// Usage: node test/e2e.mjs --model M --out DIR --epochs E --class daisy=a.jpg,b.jpg ... \
//        [--compare x.jpg,y.jpg] [--predict z.jpg] [--threads N] [--chromium /usr/bin/chromium]
import { chromium } from 'playwright-core';
import { mkdtempSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startServer } from '../serve.mjs';
import { FLAGS, chromeMemory, watchErrors } from './chrome.mjs';

function parseArgs(argv) {
  const args = { classes: [], compare: [], epochs: 3, threads: 1, chromium: '/usr/bin/chromium', lr: 0.0005 };
  for (let i = 0; i < argv.length; i += 2) {
    const [key, value] = [argv[i].replace(/^--/, ''), argv[i + 1]];
    if (key === 'class') {
      const [name, files] = value.split('=');
      args.classes.push({ name, files: files.split(',') });
    } else if (key === 'compare') args.compare = value.split(',');
    else args[key] = ['epochs', 'threads', 'lr'].includes(key) ? Number(value) : value;
  }
  return args;
}

async function waitIdle(page) {
  await page.waitForFunction(() => !window.tftlDemo.app.busy && !document.getElementById('train').disabled, null, { timeout: 600000 });
}

const seconds = (t) => (Date.now() - t) / 1000;

async function openModel(page, args, result) {
  const t = Date.now();
  await page.setInputFiles('#model-file', args.model);
  await page.waitForFunction(() => !document.getElementById('model-info').hidden || !document.getElementById('error-model').hidden, null, { timeout: 120000 });
  if (await page.isVisible('#error-model')) throw new Error(`the page refused the model: ${await page.textContent('#error-model span')}`);
  result.timings.loadSeconds = seconds(t);
  result.labels = (await page.textContent('#labels')).split(', ');
  result.metaText = await page.textContent('#meta');
}

async function addPhotos(page, args, result) {
  const t = Date.now();
  for (const c of args.classes) {
    const i = result.labels.indexOf(c.name);
    const before = await page.evaluate(() => window.tftlDemo.app.photoBatches);
    await page.setInputFiles(`input[data-class="${i}"]`, c.files);
    await page.waitForFunction((n) => window.tftlDemo.app.photoBatches > n && !window.tftlDemo.app.busy,
      before, { timeout: 300000 });
  }
  result.photoError = await page.isVisible('#error-photos') ? await page.textContent('#error-photos span') : '';
  result.timings.extractSeconds = seconds(t);
  result.sampleLabels = await page.evaluate(() => window.tftlDemo.app.sampleLabels);
  for (const [file, fn] of [['features.f32', 'features'], ['views.f32', 'viewFeatures']]) {
    writeFileSync(join(args.out, file), Buffer.from(await page.evaluate(async (name) => {
      const b = new Uint8Array(window.tftlDemo[name]().buffer);
      let s = '';
      for (let i = 0; i < b.length; i += 0x8000) s += String.fromCharCode(...b.subarray(i, i + 0x8000));
      return btoa(s);
    }, fn), 'base64'));
  }
}

async function train(page, args, result, profile) {
  await page.fill('#epochs', String(args.epochs));
  await page.fill('#lr', String(args.lr));
  const t = Date.now();
  await page.click('#train');
  await page.waitForFunction(() => /done|cancelled|stopped/.test(document.getElementById('train-status').textContent), null, { timeout: 600000 });
  await waitIdle(page);
  result.timings.trainSeconds = seconds(t);
  result.trainStatus = await page.textContent('#train-status');
  result.log = await page.evaluate(() => window.tftlDemo.runLog());
  result.trainCount = await page.evaluate(() => window.tftlDemo.app.lastRun.trainRows.length);
  result.headFit = await page.evaluate(() => window.tftlDemo.app.lastRun.headFit);
  result.valStatus = await page.textContent('#val-status');
  result.memoryAfterTraining = chromeMemory(profile);
  if (args.predict) {
    await page.setInputFiles('#predict-file', args.predict);
    await page.waitForSelector('#top3 li');
    result.top3 = await page.$$eval('#top3 li', (els) => els.map((e) => e.textContent));
  }
  await page.screenshot({ path: join(args.out, 'after_training.png'), fullPage: true });
}

/** The page's preprocessing of each --compare file, as float32 pixels for Python to compare. */
async function comparePreprocessing(page, args) {
  const size = await page.evaluate(() => window.tftlDemo.app.model.meta.image_size);
  const chunks = [];
  for (const file of args.compare) {
    const pixels = await page.evaluate(async ([data, s, name]) => {
      const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
      return Array.from(await window.tftlDemo.loadImage(new File([bytes], name), s));
    }, [readFileSync(file).toString('base64'), size, file]);
    chunks.push(Buffer.from(new Float32Array(pixels).buffer));
  }
  writeFileSync(join(args.out, 'images.f32'), Buffer.concat(chunks));
}

/** State before and after a reload must be identical (IndexedDB + restore): sha256 per tensor. */
async function reload(page, result) {
  const probe = async () => {
    const state = await window.tftlDemo.call('save');
    const out = {};
    for (const [name, t] of Object.entries(state)) {
      const digest = await crypto.subtle.digest('SHA-256', t.data);
      out[name] = Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, '0')).join('');
    }
    return out;
  };
  const before = await page.evaluate(probe);
  await page.reload();
  await page.waitForFunction(() => document.body.dataset.ready);
  result.afterReload = await page.evaluate(() => document.body.dataset.ready);
  result.keepStatus = await page.textContent('#keep-status');
  const after = await page.evaluate(probe);
  result.restore = {
    tensors: Object.keys(before).length,
    identical: Object.keys(before).filter((n) => before[n] === after[n]).length,
    featuresRestored: await page.evaluate(() => window.tftlDemo.app.features.length),
  };
}

async function download(page, args, result) {
  const [file] = await Promise.all([page.waitForEvent('download'), page.click('#download')]);
  result.downloadName = file.suggestedFilename();
  result.downloadStatus = await page.textContent('#keep-status');
  await file.saveAs(join(args.out, 'finetuned.tflite'));
}

/** Train again and press Cancel after the first step: the run must stop early. */
async function cancel(page, result) {
  await page.click('#train');
  await page.waitForFunction(() => /^epoch .* step [1-9]/.test(document.getElementById('train-status').textContent));
  await page.click('#cancel');
  await page.waitForFunction(() => /cancelled|done/.test(document.getElementById('train-status').textContent), null, { timeout: 600000 });
  await waitIdle(page);
  result.cancelStatus = await page.textContent('#train-status');
}

/** A run at learning rate 0.9 diverges: the page must roll it back to the state before it. */
async function diverge(page, result) {
  const hash = () => page.evaluate(async () => {
    const state = await window.tftlDemo.call('save');
    const parts = [];
    for (const name of Object.keys(state).sort()) parts.push(name, Array.from(new Uint8Array(await crypto.subtle.digest('SHA-256', state[name].data))).join('.'));
    return parts.join(',');
  });
  const before = await hash();
  const steps = await page.evaluate(() => window.tftlDemo.app.trainedSteps);
  await page.fill('#epochs', '2');
  await page.fill('#lr', '0.9');
  await page.click('#train');
  await page.waitForFunction(() => /rolled back|done/.test(document.getElementById('train-status').textContent), null, { timeout: 600000 });
  await waitIdle(page);
  result.diverge = { status: await page.textContent('#train-status'), error: await page.textContent('#error-train span'),
    identical: before === await hash(), stepsBefore: steps, stepsAfter: await page.evaluate(() => window.tftlDemo.app.trainedSteps),
    losses: await page.evaluate(() => window.tftlDemo.lastLosses()) };
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  mkdirSync(args.out, { recursive: true });
  const server = await startServer(0);
  const url = `http://127.0.0.1:${server.address().port}/?threads=${args.threads}`;
  const profile = mkdtempSync(join(tmpdir(), 'tftl-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: args.chromium, headless: true, args: FLAGS, acceptDownloads: true,
    viewport: { width: 1000, height: 1100 },
  });
  const result = { url, timings: {} };
  try {
    const page = context.pages()[0] || await context.newPage();
    const infoAsErrors = [];
    const errors = watchErrors(page, infoAsErrors);
    await page.goto(url);
    await page.waitForFunction(() => document.body.dataset.ready);
    result.crossOriginIsolated = await page.evaluate(() => self.crossOriginIsolated);
    await openModel(page, args, result);
    await addPhotos(page, args, result);
    await train(page, args, result, profile);
    if (args.compare.length) await comparePreprocessing(page, args);
    await reload(page, result);
    await download(page, args, result);
    await cancel(page, result);
    await diverge(page, result);
    result.pageErrors = errors;
    result.infoAsErrors = infoAsErrors;
  } finally {
    await context.close();
    server.close();
    rmSync(profile, { recursive: true, force: true });
  }
  writeFileSync(join(args.out, 'result.json'), JSON.stringify(result, null, 1));
  console.log(`wrote ${args.out}/result.json`);
}

main().catch((e) => {
  console.error(`e2e: ${e.stack || e}`);
  process.exit(1);
});

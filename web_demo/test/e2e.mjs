// Drives the page in Debian's Chromium (playwright-core, never a downloaded browser) the
// way a person would: open the model, add photos per class, train, predict, reload,
// download. Writes what Python checks (tests/test_web.py) into OUT:
//   result.json       losses and rows of every step, timings, memory, top-3, restore checks
//   features.f32      the browser's cached features (float32, row-major [n, featureSize])
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
import { FLAGS, chromeMemory } from './chrome.mjs';

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
  const result = { url };
  try {
    const page = context.pages()[0] || await context.newPage();
    const errors = [];
    page.on('pageerror', (e) => { errors.push(String(e)); console.error(`page error: ${e}`); });
    // LiteRT.js logs INFO and WARNING lines through console.error: those are not errors.
    page.on('console', (m) => { if (m.type() === 'error' && !/^(INFO|WARNING): /.test(m.text())) { errors.push(m.text()); console.error(`console: ${m.text()}`); } });
    await page.goto(url);
    await page.waitForFunction(() => document.body.dataset.ready);
    result.crossOriginIsolated = await page.evaluate(() => self.crossOriginIsolated);

    let t = Date.now();
    await page.setInputFiles('#model-file', args.model);
    await page.waitForFunction(() => !document.getElementById('model-info').hidden || !document.getElementById('error').hidden, null, { timeout: 120000 });
    if (await page.isVisible('#error')) throw new Error(`the page refused the model: ${await page.textContent('#error')}`);
    result.loadSeconds = (Date.now() - t) / 1000;
    result.labels = (await page.textContent('#labels')).split(', ');
    result.metaText = await page.textContent('#meta');

    t = Date.now();
    for (const c of args.classes) {
      const i = result.labels.indexOf(c.name);
      await page.setInputFiles(`input[data-class="${i}"]`, c.files);
      await page.waitForFunction((n) => window.tftlDemo.app.features.length >= n && !window.tftlDemo.app.busy,
        await page.evaluate(() => window.tftlDemo.app.features.length) + c.files.length, { timeout: 300000 });
    }
    result.extractSeconds = (Date.now() - t) / 1000;
    result.sampleLabels = await page.evaluate(() => window.tftlDemo.app.sampleLabels);
    writeFileSync(join(args.out, 'features.f32'), Buffer.from(await page.evaluate(async () => {
      const f = window.tftlDemo.features();
      const b = new Uint8Array(f.buffer);
      let s = '';
      for (let i = 0; i < b.length; i += 0x8000) s += String.fromCharCode(...b.subarray(i, i + 0x8000));
      return btoa(s);
    }), 'base64'));

    await page.fill('#epochs', String(args.epochs));
    await page.fill('#lr', String(args.lr));
    t = Date.now();
    await page.click('#train');
    await page.waitForFunction(() => /done|cancelled|stopped/.test(document.getElementById('train-status').textContent), null, { timeout: 600000 });
    await waitIdle(page);
    result.trainSeconds = (Date.now() - t) / 1000;
    result.trainStatus = await page.textContent('#train-status');
    result.log = await page.evaluate(() => window.tftlDemo.runLog());
    result.memoryAfterTraining = chromeMemory(profile);

    if (args.predict) {
      await page.setInputFiles('#predict-file', args.predict);
      await page.waitForSelector('#top3 li');
      result.top3 = await page.$$eval('#top3 li', (els) => els.map((e) => e.textContent));
    }
    await page.screenshot({ path: join(args.out, 'after_training.png'), fullPage: true });

    if (args.compare.length) {
      const size = await page.evaluate(() => window.tftlDemo.app.model.meta.image_size);
      const chunks = [];
      for (const file of args.compare) {
        const b64 = readFileSync(file).toString('base64');
        chunks.push(Buffer.from(await page.evaluate(async ([data, s, name]) => {
          const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
          const img = await window.tftlDemo.loadImage(new File([bytes], name), s);
          return Array.from(img);
        }, [b64, size, file]).then((a) => new Float32Array(a).buffer)));
      }
      writeFileSync(join(args.out, 'images.f32'), Buffer.concat(chunks));
    }

    // State before and after a reload must be identical (IndexedDB + restore): sha256 per tensor.
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

    const [download] = await Promise.all([page.waitForEvent('download'), page.click('#download')]);
    result.downloadName = download.suggestedFilename();
    await download.saveAs(join(args.out, 'finetuned.tflite'));
    result.pageErrors = errors;
    result.timings = { loadSeconds: result.loadSeconds, extractSeconds: result.extractSeconds, trainSeconds: result.trainSeconds };
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

// Browser timings and memory of the demo: for each thread count, a fresh tab loads the
// model, extracts features of random images and trains `--steps` train_features steps on
// random features (the page's own worker and code). Prints one JSON object.
// Usage: node bench.mjs --model M [--threads 1,2] [--steps 20] [--chromium /usr/bin/chromium]
// (web_demo/bench.py runs this and the same steps in Python, and prints the table.)
import { chromium } from 'playwright-core';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startServer } from './serve.mjs';
import { FLAGS, chromeCpuSeconds, chromeMemory } from './test/chrome.mjs';

function args() {
  const a = { threads: '1,2', steps: '20', chromium: '/usr/bin/chromium' };
  const argv = process.argv.slice(2);
  for (let i = 0; i < argv.length; i += 2) a[argv[i].replace(/^--/, '')] = argv[i + 1];
  return { ...a, threads: a.threads.split(',').map(Number), steps: Number(a.steps) };
}

const median = (xs) => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)];

/** In the page: extract 2 batches of random images (after a warm-up batch), then `steps` training steps on random features. */
async function measure(page, steps, profile) {
  const prepared = page.evaluate(async (n) => {
    const { app, call } = window.tftlDemo;
    const { batch: B, image_size: R } = app.model.meta;
    let seed = 1;
    const rand = () => ((seed = (seed * 16807) % 2147483647) / 2147483647);
    const images = Float32Array.from({ length: 2 * B * R * R * 3 }, () => 255 * rand());
    await call('extract', { images: images.slice(0, B * R * R * 3), count: B }); // warm-up, as Python's
    let t = performance.now();
    const { featureSize } = await call('extract', { images, count: 2 * B });
    const extractMs = (performance.now() - t) / 2;
    const rows = B * (n + 1);
    const features = Float32Array.from({ length: rows * featureSize }, () => 3 * rand());
    const labels = Int32Array.from({ length: rows }, (_, i) => i % app.model.labels.length);
    await call('setData', { views: { ...window.tftlDemo.encodeRows(features, rows, featureSize), count: 1 }, labels, val: null });
    window.benchPrepared = { extractMs, featureSize };
  }, steps);
  await prepared;
  const cpu0 = chromeCpuSeconds(profile);
  const m = await page.evaluate(async () => {
    const t = performance.now();
    const run = await window.tftlDemo.call('train', { epochs: 1, lr: 1e-4, warmup: 0, seed: 0, featureSize: window.benchPrepared.featureSize });
    return { extractBatchMs: window.benchPrepared.extractMs, stepMs: run.log.slice(1).map((s) => s.ms), wallS: (performance.now() - t) / 1000 };
  });
  // CPU time of the whole browser over the training run, per step: less sensitive than wall
  // time to other jobs on a shared machine (the first, warm-up step is included).
  m.cpuMsPerStep = (1000 * (chromeCpuSeconds(profile) - cpu0)) / (m.stepMs.length + 1);
  return m;
}

async function main() {
  const a = args();
  const server = await startServer(0);
  const results = { steps: a.steps, runs: [] };
  for (const threads of a.threads) {
    const profile = mkdtempSync(join(tmpdir(), 'tftl-bench-'));
    const context = await chromium.launchPersistentContext(profile, { executablePath: a.chromium, headless: true, args: FLAGS });
    try {
      const page = context.pages()[0] || await context.newPage();
      await page.goto(`http://127.0.0.1:${server.address().port}/?threads=${threads}`);
      await page.waitForFunction(() => document.body.dataset.ready);
      await page.setInputFiles('#model-file', a.model);
      await page.waitForFunction(() => !document.getElementById('model-info').hidden || !document.getElementById('error-model').hidden, null, { timeout: 120000 });
      if (await page.isVisible('#error-model')) throw new Error(`the page refused the model: ${await page.textContent('#error-model span')}`);
      const m = await measure(page, a.steps, profile);
      const procs = chromeMemory(profile);
      const kb = (list, key) => list.reduce((s, p) => s + p[key], 0);
      const renderers = procs.filter((p) => p.type === 'renderer');
      results.runs.push({
        threads, crossOriginIsolated: await page.evaluate(() => self.crossOriginIsolated),
        stepMedianMs: median(m.stepMs), stepMinMs: Math.min(...m.stepMs), cpuMsPerStep: m.cpuMsPerStep, extractBatchMs: m.extractBatchMs,
        tabPeakMB: Math.max(...renderers.map((p) => p.hwm_kb)) / 1024,
        allProcessesRssMB: kb(procs, 'rss_kb') / 1024,
      });
    } finally {
      await context.close();
      rmSync(profile, { recursive: true, force: true });
    }
  }
  server.close();
  console.log(JSON.stringify(results));
}

main().catch((e) => { console.error(`bench: ${e.stack || e}`); process.exit(1); });

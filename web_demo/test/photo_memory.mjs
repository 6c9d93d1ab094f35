// The tab's peak memory while one selection of many photos is added to one class (issue 24:
// 400 photos took the tab from 316 to 685 MB when they were preprocessed into one array).
// Usage: node test/photo_memory.mjs --model M --photos a.jpg,b.jpg,... [--chromium PATH]
// Prints one JSON line: photos added, seconds, the renderer's VmHWM before and after, in MB.
import { chromium } from 'playwright-core';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startServer } from '../serve.mjs';
import { FLAGS, chromeMemory } from './chrome.mjs';

const args = { chromium: '/usr/bin/chromium' };
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i += 2) args[argv[i].replace(/^--/, '')] = argv[i + 1];
const peakMB = (profile) => Math.max(0, ...chromeMemory(profile).filter((p) => p.type === 'renderer').map((p) => p.hwm_kb)) / 1024;

const server = await startServer(0);
const profile = mkdtempSync(join(tmpdir(), 'tftl-chromium-'));
const context = await chromium.launchPersistentContext(profile, { executablePath: args.chromium, headless: true, args: FLAGS });
try {
  const page = context.pages()[0] || await context.newPage();
  await page.goto(`http://127.0.0.1:${server.address().port}/?threads=1`);
  await page.waitForFunction(() => document.body.dataset.ready);
  await page.setInputFiles('#model-file', args.model);
  await page.waitForFunction(() => !document.getElementById('model-info').hidden, null, { timeout: 120000 });
  const before = peakMB(profile);
  const files = args.photos.split(',');
  const t = Date.now();
  await page.setInputFiles('input[data-class="0"]', files);
  await page.waitForFunction((n) => window.tftlDemo.app.features.length >= n, files.length, { timeout: 600000 });
  console.log(JSON.stringify({ photos: files.length, seconds: (Date.now() - t) / 1000, peakBeforeMB: before, peakAfterMB: peakMB(profile) }));
} finally {
  await context.close();
  server.close();
  rmSync(profile, { recursive: true, force: true });
}

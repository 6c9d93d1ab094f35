// `npm test`: the browser tests straight from node, without pytest — the user flow (e2e.mjs)
// and the trust checks (trust.mjs: also the report, saved sessions and the main screens'
// screenshots, into web_demo/screenshots with TFTL_UPDATE_SCREENSHOTS=1) on an exported model and
// flowers5 photos, with the checks that need no Python. tests/test_web.py runs the same two drivers and checks more (loss parity
// with ai-edge-litert, preprocessing against Pillow, tftl-eval of the download).
// Usage: TFTL_WEB_MODEL=model.tflite [TFTL_SHARED=../shared] npm test
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import assert from 'node:assert/strict';

const model = process.env.TFTL_WEB_MODEL;
const flowers = join(process.env.TFTL_SHARED || '../../shared', 'data', 'flowers5');
if (!model || !existsSync(model)) throw new Error('npm test needs TFTL_WEB_MODEL naming an mbv2 96 px flowers5 export (see README.md, Tests)');
const photos = (split, c, n, skip = 0) => readdirSync(join(flowers, split, c)).filter((f) => f.endsWith('.jpg')).sort()
  .slice(skip, skip + n).map((f) => join(flowers, split, c, f));
const out = process.env.TFTL_WEB_ARTIFACTS || mkdtempSync(join(tmpdir(), 'tftl-web-'));
mkdirSync(out, { recursive: true });
const node = (script, args) => execFileSync('node', [script, '--model', model, '--out', out, ...args], { stdio: 'inherit' });
const broken = join(out, 'broken.jpg');
writeFileSync(broken, 'not really a JPEG');

const classes = ['daisy', 'dandelion', 'roses', 'sunflowers', 'tulips'];
node('test/e2e.mjs', ['--epochs', '3', '--predict', photos('val', 'roses', 1)[0],
  ...classes.flatMap((c) => ['--class', `${c}=${photos('train', c, 10).join(',')}`])]);
const e2e = JSON.parse(readFileSync(join(out, 'result.json'), 'utf8'));
assert.deepEqual(e2e.pageErrors, []);
assert.match(e2e.trainStatus, /done: /);
assert.match(e2e.valStatus, /validation accuracy .* on 10 held-out photos/);
assert.equal(e2e.restore.identical, e2e.restore.tensors);
assert.match(e2e.cancelStatus, /cancelled after/);

node('test/trust.mjs', ['--a', `daisy=${photos('train', 'daisy', 6, 40)}`, '--b', `roses=${photos('train', 'roses', 6, 40)}`,
  '--many', photos('train', 'dandelion', 40).join(','), '--broken', broken, '--predict', photos('val', 'roses', 1)[0]]);
const r = JSON.parse(readFileSync(join(out, 'trust.json'), 'utf8'));
assert.ok(r.downloadDisabledBeforeTraining && r.good.downloadEnabled);
assert.match(r.oneClass.error, /at least 2 classes/);
assert.ok(r.nan.rolledBack && r.nan.identical && r.revert.identical);
assert.ok(r.forgetDisabledDuringTraining && r.openCancelled.after[0] === r.openCancelled.before[0]);
assert.ok(r.phoneScrollWidth <= 390 && r.persistCalls === 1);
assert.match(r.fewPhotos.error, new RegExp(`at least ${r.good.minPerClass} photos in each class with photos: roses has 2`));
assert.deepEqual(r.report.members, ['accuracy.png', 'report.json', 'report.md']);
assert.deepEqual(r.report.json.history, r.good.run.history);
assert.ok(r.report.png.width === 640 && r.report.png.orange > 100);
assert.equal(r.sessions.loaded.photos, r.sessions.start.photos);
assert.equal(r.sessions.broughtBack.photos, r.sessions.start.photos + 1);
assert.match(r.sessions.loadCancelled.dialog, /^Load "first"\? It replaces this session/);
assert.equal(r.sessions.overLimit.error, 'at most 8 saved sessions: delete one first');
assert.equal(r.screenshots.length, 6);
assert.deepEqual([r.pageErrors, r.infoAsErrors], [[], []]);
console.log(`npm test: ok (artifacts in ${out})`);

// Runs the page's Pillow port (src/preprocess.js pillowResize) under Node on cases that
// tests/test_web.py wrote: DIR/cases.json [{name, w, h, size, box}], DIR/<name>.raw (RGB
// input) and DIR/<name>.expected (Pillow's output). Prints {cases, maxAbsDiff}.
// Usage: node test/resize_check.mjs DIR
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { pillowResize } from '../src/preprocess.js';

const dir = process.argv[2];
let maxAbsDiff = 0;
const cases = JSON.parse(readFileSync(join(dir, 'cases.json'), 'utf8'));
for (const c of cases) {
  const raw = new Uint8Array(readFileSync(join(dir, `${c.name}.raw`)));
  const expected = new Uint8Array(readFileSync(join(dir, `${c.name}.expected`)));
  const got = pillowResize(raw, c.w, c.h, c.size, c.size, c.box);
  if (got.length !== expected.length) throw new Error(`${c.name}: ${got.length} values, expected ${expected.length}`);
  for (let k = 0; k < expected.length; k++) maxAbsDiff = Math.max(maxAbsDiff, Math.abs(expected[k] - got[k]));
}
console.log(JSON.stringify({ cases: cases.length, maxAbsDiff }));

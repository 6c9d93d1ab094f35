// Runs the page's Pillow port (src/preprocess.js pillowResize) under Node on cases that
// tests/test_web.py wrote: DIR/cases.json [{name, w, h, size, box}], DIR/<name>.raw (RGB
// input) and DIR/<name>.expected (Pillow's output; flipped left-right when the case says `flip`, as an
// augmented view), and DIR/boxes.json [{w, h, u, box}]: data.random_resized_crop_box's box for the
// uniform draws u, which the page's port must give from the same draws. Prints {cases, maxAbsDiff, boxes, boxMismatches}.
// Usage: node test/resize_check.mjs DIR
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { pillowResize, flipRgb, randomResizedCropBox } from '../src/preprocess.js';

const dir = process.argv[2];
let maxAbsDiff = 0;
const cases = JSON.parse(readFileSync(join(dir, 'cases.json'), 'utf8'));
for (const c of cases) {
  const raw = new Uint8Array(readFileSync(join(dir, `${c.name}.raw`)));
  const expected = new Uint8Array(readFileSync(join(dir, `${c.name}.expected`)));
  const resized = pillowResize(raw, c.w, c.h, c.size, c.size, c.box);
  const got = c.flip ? flipRgb(resized, c.size, c.size) : resized;
  if (got.length !== expected.length) throw new Error(`${c.name}: ${got.length} values, expected ${expected.length}`);
  for (let k = 0; k < expected.length; k++) maxAbsDiff = Math.max(maxAbsDiff, Math.abs(expected[k] - got[k]));
}
const boxes = JSON.parse(readFileSync(join(dir, 'boxes.json'), 'utf8'));
const boxMismatches = boxes.filter((b) => {
  let i = 0;
  return JSON.stringify(randomResizedCropBox(b.w, b.h, () => b.u[i++])) !== JSON.stringify(b.box);
}).length;
console.log(JSON.stringify({ cases: cases.length, maxAbsDiff, boxes: boxes.length, boxMismatches }));

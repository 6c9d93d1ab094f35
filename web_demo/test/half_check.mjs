// The page's float16 feature cache (src/half.js encodeRows) under Node on rows that tests/test_web.py
// wrote: DIR/rows.f32 ([rows, size] float32) and DIR/shape.json {rows, size}. Writes DIR/data.u16 and
// DIR/scales.f32, which the test compares with tftl.runtime.features._store's float16 and scales.
// Usage: node test/half_check.mjs DIR
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { encodeRows, decodeRow } from '../src/half.js';

const dir = process.argv[2];
const { rows, size } = JSON.parse(readFileSync(join(dir, 'shape.json'), 'utf8'));
const buf = readFileSync(join(dir, 'rows.f32'));
const x = new Float32Array(buf.buffer, buf.byteOffset, rows * size);
const enc = encodeRows(x, rows, size);
writeFileSync(join(dir, 'data.u16'), enc.data);
writeFileSync(join(dir, 'scales.f32'), enc.scales);
const back = new Float32Array(rows * size);
for (let r = 0; r < rows; r++) decodeRow(enc, r, size, back, r * size);
writeFileSync(join(dir, 'decoded.f32'), back);

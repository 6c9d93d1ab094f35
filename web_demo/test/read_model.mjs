// Runs the page's model-file reader (src/modelfile.js) under Node on one file and prints
// one JSON line: {ok, labels, format, trained_state, state_tensors} or {error}. Used by
// tests/test_web.py to check refusals (tftl-1, damaged files) without a browser.
// Usage: node test/read_model.mjs FILE
import { readFileSync } from 'node:fs';
import { basename } from 'node:path';
import { readModel } from '../src/modelfile.js';

const path = process.argv[2];
try {
  const m = await readModel(new Uint8Array(readFileSync(path)), basename(path));
  console.log(JSON.stringify({ ok: true, labels: m.labels, format: m.meta.format, trained_state: !!m.meta.trained_state,
    state_tensors: m.state ? Object.keys(m.state).length : 0, flatbuffer_bytes: m.flatbuffer.length }));
} catch (e) {
  console.log(JSON.stringify({ ok: false, error: e.message, type: e.constructor.name }));
}

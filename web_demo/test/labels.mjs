// Reads the labels.txt texts of a vectors file (contract/vectors/labels.json) as the page does
// (src/modelfile.js parseLabels) and prints one JSON list: {labels} or {error, type} per text.
// tests/test_web.py compares it with the file's verdicts. Usage: node test/labels.mjs VECTORS.json
import { readFileSync } from 'node:fs';
import { parseLabels } from '../src/modelfile.js';

const { cases } = JSON.parse(readFileSync(process.argv[2], 'utf8'));
console.log(JSON.stringify(cases.map(({ text }) => {
  try {
    return { labels: parseLabels(text) };
  } catch (e) {
    return { error: e.message, type: e.constructor.name };
  }
})));

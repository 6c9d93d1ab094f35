// A labels.txt reader written from contract/rules.json alone (no tftl code): the proof that the
// specification is enough to write a fourth reader. Prints one JSON list, {labels} or {error}
// per case of a vectors file. tests/test_spec.py compares it with the file's verdicts.
// Usage: node test/spec_reader.mjs RULES.json VECTORS.json
import { readFileSync } from 'node:fs';

const rules = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const { cases } = JSON.parse(readFileSync(process.argv[3], 'utf8'));
const refused = new RegExp(`^${rules.label.refused_character}$`, 'u');
const space = new RegExp(`^${rules.label.space}$`, 'u');

function strip(text) {
  const c = [...text];
  let [a, b] = [0, c.length];
  while (a < b && space.test(c[a])) a++;
  while (b > a && space.test(c[b - 1])) b--;
  return c.slice(a, b).join('');
}

function parse(text) {
  const body = text.startsWith('\uFEFF') ? text.slice(1) : text;
  const labels = body.split('\n').map((l) => (l.endsWith('\r') ? l.slice(0, -1) : l)).filter((l) => strip(l));
  if (!labels.length) throw new Error('no labels');
  for (const l of labels) {
    const chars = [...l];
    if (chars.length > rules.label.max_code_points) throw new Error(`too long: ${chars.length}`);
    if (strip(l) !== l) throw new Error('outer space');
    if (rules.label.refused_names.includes(l)) throw new Error('refused name');
    if (chars.some((c) => refused.test(c))) throw new Error('refused character');
  }
  if (rules.labels_txt.unique && new Set(labels).size !== labels.length) throw new Error('duplicate');
  return labels;
}

console.log(JSON.stringify(cases.map(({ text }) => {
  try {
    return { labels: parse(text) };
  } catch (e) {
    return { error: e.message };
  }
})));

// The browser's side of contract/vectors/probe.json: every linear probe fitted by src/probe.js and
// every recipe resolved by src/modelfile.js + src/schedule.js, printed as one JSON object
// ({probes: [{l2, cv_accuracy, kernel, bias}], recipes: [resolved]}); with a model file, the page's
// recipe resolved for N photos. tests/test_conformance.py compares both with Python's and Java's.
// Usage: node test/probe.mjs VECTORS.json | node test/probe.mjs MODEL --recipe N
import { readFileSync } from 'node:fs';
import { basename } from 'node:path';
import { fitHead } from '../src/probe.js';
import { readModel, recipeOf } from '../src/modelfile.js';
import { resolveRecipe } from '../src/schedule.js';

const args = process.argv.slice(2);
if (args[1] === '--recipe') {
  const model = await readModel(new Uint8Array(readFileSync(args[0])), basename(args[0]));
  console.log(JSON.stringify(resolveRecipe(recipeOf(model.meta), Number(args[2]), model.meta.batch)));
} else {
  const v = JSON.parse(readFileSync(args[0], 'utf8'));
  const probes = v.probes.map((p) => {
    const fit = fitHead(Float64Array.from(p.x.flat()), Int32Array.from(p.y), p.x.length, p.x[0].length, p.classes);
    return { l2: fit.l2, cv_accuracy: fit.cv, kernel: Array.from(fit.kernel), bias: Array.from(fit.bias) };
  });
  const recipes = v.recipes.map((r) => resolveRecipe(recipeOf({ state_names: r.state_names, recipe: r.recipe }), r.images, r.batch));
  console.log(JSON.stringify({ probes, recipes }));
}

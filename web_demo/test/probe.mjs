// contract/vectors/probe.json in the browser's code: every linear probe fitted by src/probe.js
// (chosen L2, CV accuracies, kernel and bias within 1e-4 relative of Python's fit) and every
// recipe resolved by src/modelfile.js + src/schedule.js as loop.py does. With a model file, prints
// the page's resolved recipe for N photos instead (tests/test_conformance.py compares it with Python's).
// Usage: node test/probe.mjs VECTORS.json | node test/probe.mjs --recipe MODEL N
import { readFileSync } from 'node:fs';
import { basename } from 'node:path';
import assert from 'node:assert/strict';
import { fitHead, FOLDS, L2_GRID, STEPS } from '../src/probe.js';
import { readModel, recipeOf } from '../src/modelfile.js';
import { resolveRecipe } from '../src/schedule.js';

function close(got, want, what) {
  const scale = Math.max(...want.map(Math.abs));
  want.forEach((w, i) => assert.ok(Math.abs(got[i] - w) <= 1e-4 * scale, `${what}[${i}]: ${got[i]} vs ${w}`));
}

const args = process.argv.slice(2);
if (args[0] === '--recipe') {
  const model = await readModel(new Uint8Array(readFileSync(args[1])), basename(args[1]));
  console.log(JSON.stringify(resolveRecipe(recipeOf(model.meta), Number(args[2]), model.meta.batch)));
} else {
  const v = JSON.parse(readFileSync(args[0], 'utf8'));
  assert.deepEqual([v.folds, v.grid, v.steps], [FOLDS, L2_GRID, STEPS]);
  for (const [i, p] of v.probes.entries()) {
    const n = p.x.length;
    const d = p.x[0].length;
    const fit = fitHead(Float64Array.from(p.x.flat()), Int32Array.from(p.y), n, d, p.classes);
    assert.equal(fit.l2, p.l2, `probe ${i}: l2`);
    // Python rounds its CV accuracies to 4 decimals (their keys are the L2 values in %g form).
    L2_GRID.forEach((l2, j) => assert.ok(Math.abs(fit.cv[j] - p.cv_accuracy[String(l2)]) <= 1e-4, `probe ${i} cv ${l2}`));
    close(Array.from(fit.kernel), p.kernel.flat(), `probe ${i} kernel`);
    close(Array.from(fit.bias), p.bias, `probe ${i} bias`);
  }
  for (const r of v.recipes) {
    const meta = { state_names: ['a__kernel', 'b__moving_mean', 'opt_step'], recipe: r.recipe };
    assert.deepEqual(resolveRecipe(recipeOf(meta), r.images, r.batch), r.resolved, JSON.stringify(r));
  }
  console.log(JSON.stringify({ probes: v.probes.length, recipes: v.recipes.length }));
}

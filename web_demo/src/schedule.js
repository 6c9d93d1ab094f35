// The training schedule, as tftl-train's (tftl/runtime/schedule.py, driven by loop.py): cosine learning rate
// with linear warm-up, min(50, total // 10) warm-up steps by default, batches of the
// model's batch size with the last partial batch padded (weight 0) by the worker.
import { seeded } from './random.js';

/** tftl.runtime.schedule.cosine_lr: linear warm-up then cosine decay to 0. */
export function cosineLr(baseLr, step, totalSteps, warmupSteps = 0) {
  if (warmupSteps && step < warmupSteps) return (baseLr * (step + 1)) / warmupSteps;
  const t = (step - warmupSteps) / Math.max(1, totalSteps - warmupSteps);
  return 0.5 * baseLr * (1 + Math.cos(Math.PI * Math.min(1, t)));
}

export function defaultWarmup(totalSteps) {
  return Math.min(50, Math.floor(totalSteps / 10));
}

/** spec.resolved_recipe: what a run on `images` photos at `batch` trains with (loop.default_epochs, Schedule.resolved). */
export function resolveRecipe(recipe, images, batch) {
  const steps = Math.max(1, Math.ceil(images / batch));
  const epochs = Math.max(recipe.epochs, Math.ceil(recipe.min_steps / steps));
  const total = Math.ceil(images / batch) * epochs;
  const warmup = recipe.warmup_steps ?? defaultWarmup(total);
  return { lr: recipe.lr, epochs, total_steps: total, warmup_steps: warmup, cache_views: recipe.cache_views, head_init: recipe.head_init, classifier: [...recipe.classifier] };
}

/**
 * Every step of a run: [{epoch, rows, views}], each epoch a fresh shuffle of 0..n-1 cut into batches
 * and, as features.CachedFeatures.draw, one cached view per photo drawn for the epoch.
 * @param {number} n cached photos
 * @param {number} batch the model's batch size
 * @param {number} views cached views per photo
 */
export function epochPlan(n, batch, epochs, seed = 0, views = 1) {
  const next = seeded(seed);
  const plan = [];
  for (let epoch = 0; epoch < epochs; epoch++) {
    const order = Array.from({ length: n }, (_, i) => i);
    for (let i = n - 1; i > 0; i--) {
      const j = Math.floor(next() * (i + 1));
      [order[i], order[j]] = [order[j], order[i]];
    }
    const draw = Array.from({ length: n }, () => (views > 1 ? Math.floor(next() * views) : 0));
    for (let start = 0; start < n; start += batch) {
      const rows = order.slice(start, start + batch);
      plan.push({ epoch, rows, views: rows.map((r) => draw[r]) });
    }
  }
  return plan;
}

// Seeded randomness for the page: a run's shuffles and view draws (src/schedule.js) and the photos'
// augmented views (src/preprocess.js) are reproducible from their seeds (tests replay them). numpy's
// PCG64 streams are not ported: the page draws from the same distributions, not the same numbers.

/** mulberry32: a small seeded generator of floats in [0, 1). */
export function seeded(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** The seed of augmented view `view` of photo `index` (as features._view_seed: fixed by the pair alone). */
export function viewSeed(index, view) {
  return Math.imul(index + 1, 0x9e3779b1) ^ Math.imul(view + 1, 0x85ebca77);
}

// The linear probe of a recipe's head_init "probe" (tftl/runtime/probe.py, step for step): the
// classifier fitted on fixed embeddings before fine-tuning (LP-FT). L2-penalised softmax regression
// on standardised features by Nesterov-accelerated gradient descent with step 1/L, the penalty
// chosen by stratified 3-fold cross-validation over L2_GRID (probe.FOLD_RULE), the
// standardisation folded into the returned kernel and bias. contract/vectors/probe.json holds
// Python's fits; web_demo/test/probe.mjs reproduces them (tests/test_conformance.py runs it).
// Matrices are Float64Array, row-major.

export const L2_GRID = [1e-4, 1e-3, 1e-2, 1e-1];
export const FOLDS = 3;
export const STEPS = 1500;

/** probe.folds_of without groups: the j-th row of each class is in fold j % folds. */
export function foldsOf(y, folds = FOLDS) {
  const seen = new Map();
  return Int32Array.from(y, (label) => {
    const j = seen.get(label) || 0;
    seen.set(label, j + 1);
    return j % folds;
  });
}

/** a [n, m] @ b [m, p] */
function matmul(a, b, n, m, p) {
  const out = new Float64Array(n * p);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < m; j++) {
      const v = a[i * m + j];
      if (v === 0) continue;
      for (let q = 0; q < p; q++) out[i * p + q] += v * b[j * p + q];
    }
  }
  return out;
}

/** The Gram matrix x x^T [n, n] of x [n, d]. */
function gram(x, n, d) {
  const g = new Float64Array(n * n);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j <= i; j++) {
      let s = 0;
      for (let q = 0; q < d; q++) s += x[i * d + q] * x[j * d + q];
      g[i * n + j] = g[j * n + i] = s;
    }
  }
  return g;
}

/** x^T x [d, d] of x [n, d]. */
function cross(x, n, d) {
  const c = new Float64Array(d * d);
  for (let r = 0; r < n; r++) {
    for (let i = 0; i < d; i++) {
      const v = x[r * d + i];
      for (let j = 0; j <= i; j++) c[i * d + j] += v * x[r * d + j];
    }
  }
  for (let i = 0; i < d; i++) for (let j = 0; j < i; j++) c[j * d + i] = c[i * d + j];
  return c;
}

/** The largest eigenvalue of a symmetric positive semi-definite [m, m] matrix: power iteration until the residual vanishes. */
export function topEigenvalue(a, m) {
  let v = Float64Array.from({ length: m }, (_, i) => 1 + ((i * 7919) % 101) / 101);
  let lambda = 0;
  for (let it = 0; it < 100000; it++) {
    const w = matmul(a, v, m, m, 1);
    let vv = 0;
    let vw = 0;
    for (let i = 0; i < m; i++) { vv += v[i] * v[i]; vw += v[i] * w[i]; }
    lambda = vw / vv;
    let res = 0;
    let ww = 0;
    for (let i = 0; i < m; i++) { res += (w[i] - lambda * v[i]) ** 2; ww += w[i] * w[i]; }
    if (ww === 0) return 0;
    if (Math.sqrt(res / vv) <= 1e-11 * Math.abs(lambda)) return lambda;
    const norm = Math.sqrt(ww);
    v = w.map((x) => x / norm);
  }
  return lambda;
}

/** ||[x, 1]||_2^2 (the squared spectral norm), from the smaller of its two Gram forms. */
function squaredNorm(x, n, d) {
  if (n <= d + 1) {
    const g = gram(x, n, d);
    for (let i = 0; i < n * n; i++) g[i] += 1;
    return topEigenvalue(g, n);
  }
  const xb = new Float64Array(n * (d + 1));
  for (let r = 0; r < n; r++) {
    xb.set(x.subarray(r * d, (r + 1) * d), r * (d + 1));
    xb[r * (d + 1) + d] = 1;
  }
  return topEigenvalue(cross(xb, n, d + 1), d + 1);
}

/** Row-wise softmax of z [n, k] minus the one-hot labels, divided by n: the loss gradient at the logits. */
function softmaxGrad(z, y, n, k) {
  for (let i = 0; i < n; i++) {
    let max = -Infinity;
    for (let c = 0; c < k; c++) max = Math.max(max, z[i * k + c]);
    let sum = 0;
    for (let c = 0; c < k; c++) sum += (z[i * k + c] = Math.exp(z[i * k + c] - max));
    for (let c = 0; c < k; c++) z[i * k + c] = (z[i * k + c] / sum - (y[i] === c ? 1 : 0)) / n;
  }
  return z;
}

/** probe.fit_softmax_gram (n < d) or probe.fit_softmax: {w [d, k], b [k]}. */
export function solve(x, y, n, d, k, l2, steps = STEPS) {
  const lip = 0.5 * squaredNorm(x, n, d) / n + l2;
  const useGram = n < d;
  const g = useGram ? gram(x, n, d) : null;
  const rows = useGram ? n : d;
  let a = new Float64Array(rows * k);
  let b = new Float64Array(k);
  let prevA = a;
  let prevB = b;
  for (let t = 0; t < steps; t++) {
    const beta = t / (t + 3);
    const va = a.map((v, i) => v + beta * (v - prevA[i]));
    const vb = b.map((v, i) => v + beta * (v - prevB[i]));
    const z = useGram ? matmul(g, va, n, n, k) : matmul(x, va, n, d, k);
    for (let i = 0; i < n; i++) for (let c = 0; c < k; c++) z[i * k + c] += vb[c];
    const grad = softmaxGrad(z, y, n, k);
    const gb = new Float64Array(k);
    for (let i = 0; i < n; i++) for (let c = 0; c < k; c++) gb[c] += grad[i * k + c];
    prevA = a;
    prevB = b;
    if (useGram) {
      a = va.map((v, i) => v - (grad[i] + l2 * v) / lip);
    } else {
      const gw = new Float64Array(d * k); // x^T grad
      for (let i = 0; i < n; i++) {
        for (let q = 0; q < d; q++) {
          const xv = x[i * d + q];
          for (let c = 0; c < k; c++) gw[q * k + c] += xv * grad[i * k + c];
        }
      }
      a = va.map((v, i) => v - (gw[i] + l2 * v) / lip);
    }
    b = vb.map((v, c) => v - gb[c] / lip);
  }
  if (!useGram) return { w: a, b };
  const w = new Float64Array(d * k); // x^T a
  for (let i = 0; i < n; i++) for (let q = 0; q < d; q++) for (let c = 0; c < k; c++) w[q * k + c] += x[i * d + q] * a[i * k + c];
  return { w, b };
}

/** Column means and standard deviations (+1e-6) of the listed rows of x [*, d]. */
function moments(x, rows, d) {
  const mu = new Float64Array(d);
  const sd = new Float64Array(d);
  for (const r of rows) for (let q = 0; q < d; q++) mu[q] += x[r * d + q];
  for (let q = 0; q < d; q++) mu[q] /= rows.length;
  for (const r of rows) for (let q = 0; q < d; q++) sd[q] += (x[r * d + q] - mu[q]) ** 2;
  for (let q = 0; q < d; q++) sd[q] = Math.sqrt(sd[q] / rows.length) + 1e-6;
  return { mu, sd };
}

function standardised(x, rows, d, { mu, sd }) {
  const out = new Float64Array(rows.length * d);
  rows.forEach((r, i) => { for (let q = 0; q < d; q++) out[i * d + q] = (x[r * d + q] - mu[q]) / sd[q]; });
  return out;
}

/** probe.choose_l2: {l2, cv: [accuracy per L2_GRID entry]}; a tie goes to the first. */
export function chooseL2(x, y, n, d, k) {
  const fold = foldsOf(y);
  const cv = L2_GRID.map((l2) => {
    const acc = [];
    for (let f = 0; f < FOLDS; f++) {
      const tr = [];
      const va = [];
      for (let i = 0; i < n; i++) (fold[i] === f ? va : tr).push(i);
      if (!va.length || !tr.length) continue;
      const m = moments(x, tr, d);
      const { w, b } = solve(standardised(x, tr, d, m), tr.map((i) => y[i]), tr.length, d, k, l2);
      const logits = matmul(standardised(x, va, d, m), w, va.length, d, k);
      let right = 0;
      va.forEach((r, i) => {
        let best = 0;
        for (let c = 1; c < k; c++) if (logits[i * k + c] + b[c] > logits[i * k + best] + b[best]) best = c;
        right += best === y[r] ? 1 : 0;
      });
      acc.push(right / va.length);
    }
    return acc.length ? acc.reduce((s, v) => s + v, 0) / acc.length : 0;
  });
  let best = 0;
  cv.forEach((v, i) => { if (v > cv[best]) best = i; });
  return { l2: L2_GRID[best], cv };
}

/**
 * probe.fit_head: the probe on raw embeddings x [n, d] (Float64Array) with labels y, k classes;
 * {kernel: Float32Array [d, k], bias: Float32Array [k], l2, cv} with logits = x @ kernel + bias.
 */
export function fitHead(x, y, n, d, k) {
  const { l2, cv } = chooseL2(x, y, n, d, k);
  const all = Array.from({ length: n }, (_, i) => i);
  const m = moments(x, all, d);
  const { w, b } = solve(standardised(x, all, d, m), y, n, d, k, l2);
  const kernel = new Float32Array(d * k);
  const bias = new Float32Array(k);
  for (let c = 0; c < k; c++) {
    let shift = 0;
    for (let q = 0; q < d; q++) {
      const kv = w[q * k + c] / m.sd[q];
      kernel[q * k + c] = kv;
      shift += m.mu[q] * kv;
    }
    bias[c] = b[c] - shift;
  }
  return { kernel, bias, l2, cv };
}

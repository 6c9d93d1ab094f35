"""A linear probe in numpy: the classifier fitted on fixed embeddings (the LP of LP-FT).

tftl-train fits the model's head this way on the cached views' embeddings (the model's
`embed_features` signature) before it fine-tunes (Kumar et al., "Fine-Tuning can Distort
Pretrained Features", ICLR 2022): the blocks then start from a head that already fits, so
the first steps do not push large gradients of a random head into pretrained features.
bench/linear_probe.py and bench/accuracy/probe.py use the same solvers as their baseline.

L2-penalised multinomial logistic regression on standardised features, solved by
Nesterov-accelerated full-batch gradient descent with step 1/L (L the gradient's Lipschitz
bound), so no rate is tuned; the penalty is chosen by K-fold cross-validation on the
training rows, folds grouped by photo so that views of one photo never straddle folds.

The Android core (org.tftl.core.Probe) and the browser (web_demo/src/probe.js) fit the same
probe; contract/vectors/probe.json (tftl.runtime.spec) holds fits they reproduce. So every
step is one they can repeat exactly: the folds are a fixed rule (FOLD_RULE, no generator),
and L is the largest eigenvalue of xb @ xb.T or xb.T @ xb, found by any exact method.
"""

import numpy as np

L2_GRID = (1e-4, 1e-3, 1e-2, 1e-1)
FOLDS = 3
STEPS = 1500
FOLD_RULE = ("stratified: the distinct groups in ascending order (no groups: each row its own, in row "
             "order), and the j-th group of each class (the label of its first row) is in fold j % folds")


def fit_softmax(x, y, k, l2, steps=STEPS):
    """(W [d, k], b [k]): the penalised regression on the n x d features (the primal form)."""
    n, d = x.shape
    xb = np.hstack([x, np.ones((n, 1))])  # bias as a last, unpenalised column
    lip = 0.5 * np.linalg.norm(xb, 2) ** 2 / n + l2
    w = np.zeros((d + 1, k))
    prev, onehot, mask = w.copy(), np.eye(k)[y], np.r_[np.ones(d), 0.0][:, None]
    for t in range(steps):
        v = w + (t / (t + 3)) * (w - prev)
        z = xb @ v
        z -= z.max(axis=1, keepdims=True)
        p = np.exp(z)
        p /= p.sum(axis=1, keepdims=True)
        prev, w = w, v - (xb.T @ (p - onehot) / n + l2 * mask * v) / lip
    return w[:-1], w[-1]


def fit_softmax_gram(x, y, k, l2, steps=STEPS):
    """fit_softmax, the same iterates computed in the span of the training rows.

    Every gradient step of fit_softmax adds xb.T @ G / n + l2 * mask * v to the weights,
    starting from 0: so the feature weights stay x.T @ A for an n x k matrix A, and the
    iteration runs on the n x n Gram matrix x @ x.T instead of the n x d features: the same
    Nesterov sequence, the same step 1/L, the same result up to rounding, and d/n times less
    work per step for n < d."""
    n, d = x.shape
    x = np.asarray(x, dtype=np.float64)
    xb = np.hstack([x, np.ones((n, 1))])
    lip = 0.5 * np.linalg.norm(xb, 2) ** 2 / n + l2
    gram = x @ x.T
    a, b = np.zeros((n, k)), np.zeros(k)
    prev_a, prev_b, onehot = a.copy(), b.copy(), np.eye(k)[y]
    for t in range(steps):
        beta = t / (t + 3)
        va, vb = a + beta * (a - prev_a), b + beta * (b - prev_b)
        z = gram @ va + vb
        z -= z.max(axis=1, keepdims=True)
        p = np.exp(z)
        p /= p.sum(axis=1, keepdims=True)
        g = (p - onehot) / n
        prev_a, prev_b = a, b
        a, b = va - (g + l2 * va) / lip, vb - g.sum(axis=0) / lip
    return x.T @ a, b


def solve(x, y, k, l2, steps=STEPS):
    """The cheaper of the two equal solvers for x's shape."""
    return (fit_softmax_gram if x.shape[0] < x.shape[1] else fit_softmax)(x, y, k, l2, steps)


def standardise(train, *others):
    mu, sd = train.mean(axis=0), train.std(axis=0) + 1e-6
    return [(a - mu) / sd for a in (train, *others)]


def folds_of(y, folds=FOLDS, groups=None):
    """Each row's fold by FOLD_RULE (rows of one group share a fold)."""
    y = np.asarray(y)
    groups = np.arange(len(y)) if groups is None else np.asarray(groups)
    _, first, inverse = np.unique(groups, return_index=True, return_inverse=True)
    fold_of, seen = np.empty(len(first), np.int64), {}
    for g, label in enumerate(y[first]):
        fold_of[g] = seen.get(label, 0) % folds
        seen[label] = seen.get(label, 0) + 1
    return fold_of[inverse.reshape(-1)]


def choose_l2(x, y, k, folds=FOLDS, groups=None, grid=L2_GRID, solver=solve):
    """(the L2 of `grid` with the best mean CV accuracy on (x, y), {l2: accuracy}); a tie goes to
    the first in `grid`.

    groups: one id per row (rows of one id share a fold); None: every row its own."""
    fold = folds_of(y, folds, groups)
    scores = {}
    for l2 in grid:
        acc = []
        for f in range(folds):
            if not (fold == f).any() or (fold == f).all():
                continue
            tr, va = standardise(x[fold != f], x[fold == f])
            w, b = solver(tr, y[fold != f], k, l2)
            acc.append(float(((va @ w + b).argmax(1) == y[fold == f]).mean()))
        scores[l2] = float(np.mean(acc)) if acc else 0.0
    return max(scores, key=scores.get), scores


def fit_head(x, y, k, *, groups=None):
    """(kernel [d, k] f32, bias [k] f32, info): the probe on raw embeddings x, the
    standardisation folded into the weights, so logits = x @ kernel + bias."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y)
    l2, cv = choose_l2(x, y, k, groups=groups)
    mu, sd = x.mean(axis=0), x.std(axis=0) + 1e-6
    w, b = solve((x - mu) / sd, y, k, l2)
    kernel = w / sd[:, None]
    bias = b - mu @ kernel
    return kernel.astype(np.float32), bias.astype(np.float32), {
        "l2": l2, "cv_accuracy": {f"{k:g}": round(v, 4) for k, v in cv.items()}}

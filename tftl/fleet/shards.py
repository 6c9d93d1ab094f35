"""Split one labelled image list into client shards: IID, or label-skewed by a Dirichlet(alpha) draw.

Simulation only: a real client trains on its own folder. Deterministic for a seed, so every
simulated client process computes the same split and takes its own part.
"""

import numpy as np


def iid(labels, n: int, seed: int = 0) -> list:
    """`n` index arrays of (nearly) equal size, drawn uniformly at random."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(labels))
    return [np.sort(part) for part in np.array_split(order, n)]


def dirichlet(labels, n: int, alpha: float, seed: int = 0, min_size: int = 1) -> list:
    """`n` index arrays whose class mix follows Dirichlet(alpha) per class (smaller alpha: more skew).

    Each class's images are divided among the clients in proportions drawn from
    Dirichlet(alpha * 1_n). The draw is repeated (same seed stream) until every client holds
    at least `min_size` images, as in Hsu et al. 2019 and Flower Datasets' DirichletPartitioner.

    Raises:
        ValueError: alpha <= 0, or fewer images than n * min_size.
    """
    labels = np.asarray(labels)
    if alpha <= 0:
        raise ValueError(f"Dirichlet alpha must be > 0, got {alpha}")
    if len(labels) < n * min_size:
        raise ValueError(f"{len(labels)} images cannot give {n} clients {min_size} image(s) each")
    rng = np.random.default_rng(seed)
    for _ in range(1000):
        parts = [[] for _ in range(n)]
        for c in np.unique(labels):
            idx = rng.permutation(np.flatnonzero(labels == c))
            cuts = (np.cumsum(rng.dirichlet(np.full(n, alpha)))[:-1] * len(idx)).astype(int)
            for k, chunk in enumerate(np.split(idx, cuts)):
                parts[k].extend(chunk.tolist())
        if min(len(p) for p in parts) >= min_size:
            return [np.sort(np.asarray(p, np.int64)) for p in parts]
    raise ValueError(f"no Dirichlet({alpha}) split gave every one of {n} clients {min_size} image(s) — "
                     "raise alpha or use fewer clients")


def split(labels, n: int, kind: str = "iid", alpha: float = 0.5, seed: int = 0) -> list:
    """Shards by name: "iid" or "dirichlet"."""
    if n < 1:
        raise ValueError(f"number of clients must be >= 1, got {n}")
    if kind == "iid":
        return iid(labels, n, seed)
    if kind == "dirichlet":
        return dirichlet(labels, n, alpha, seed, min_size=1)
    raise ValueError(f"shard kind must be iid or dirichlet, got {kind!r}")

"""Accuracy, loss, per-class counts and the skipped-files report: numpy only, shared by
validation during training (`loop`) and evaluation (`evaluate`)."""

import numpy as np

from tftl.runtime.files import printable


def metrics(probs, labels, label_names) -> dict:
    """accuracy, n, loss, per_class {name: {accuracy, n}} and confusion [true][pred] (K x K)."""
    k = len(label_names)
    n = int(len(labels))
    pred = np.argmax(probs, axis=1) if n else np.zeros(0, np.int64)
    confusion = np.zeros((k, k), np.int64)
    np.add.at(confusion, (labels, pred), 1)
    per_class = {}
    for c in range(k):
        total = int(confusion[c].sum())
        if total:
            per_class[label_names[c]] = {"accuracy": float(confusion[c, c] / total), "n": total}
    p_true = probs[np.arange(n), labels] if n else np.zeros(0)
    return {
        "accuracy": float((pred == labels).mean()) if n else None,
        "n": n,
        "loss": float(-np.log(np.maximum(p_true, 1e-12)).mean()) if n else None,
        "per_class": per_class,
        "confusion": confusion.tolist(),
    }


def skipped_report(skipped: dict) -> list:
    """[{path, reason}] sorted by path: the JSON form of a {path: reason} dict."""
    return [{"path": p, "reason": r} for p, r in sorted(skipped.items())]


def skipped_lines(report: list) -> list:
    """The warning for a skipped-files report ([{path, reason}]): a count, then one line per
    file, its name and reason escaped (files.printable) so each entry stays on one line."""
    if not report:
        return []
    return [f"warning: skipped {len(report)} unreadable image(s):"] + [
        f"  {printable(s['path'])}: {printable(s['reason'])}" for s in report]

"""Prediction, metrics and the skipped-files report, for the CLIs and for programs.

    s = Session("mine.tflite")
    result = evaluate(s, "photos_test/")            # accuracy, n, per_class, confusion, skipped
    preds, skipped = top_k(s, ["cat.jpg"], k=3)

No TensorFlow here.
"""

import contextlib

import numpy as np

from tftl.runtime import data, features
from tftl.runtime.metrics import metrics, skipped_report
from tftl.runtime.errors import InputError


def predict(session, samples, pool, *, skipped=None, stop=None):
    """(probabilities [n_ok, K], labels [n_ok]) of the readable samples, eval crop, `infer`.

    skipped: a dict that receives {name: reason} for each unreadable sample.
    stop: an object whose check() raises to stop between batches.
    """
    samples = features.as_samples(samples)
    probs, labels = [], []
    gen = features.prefetch(features.decode_batches(samples, session.image_size, session.batch, pool))
    with contextlib.closing(gen):
        for ok, images, failures in gen:
            if stop is not None:
                stop.check()
            for i, reason in failures:
                if skipped is not None:
                    skipped.setdefault(samples.name(i), reason)
            if len(ok):
                probs.append(session.predict(images))
                labels.extend(samples.labels[ok].tolist())
    k = len(session.labels)
    return (np.concatenate(probs) if probs else np.zeros((0, k), np.float32)), np.asarray(labels, np.int64)


def check_outputs(session, probs):
    """`probs`, or InputError when any is NaN or infinite: a model whose weights diverged
    (finite but huge, so every prediction overflows) gives no accuracy and no labels."""
    if not np.isfinite(probs).all():
        raise InputError(f"{session.path} gives NaN or infinite outputs (its trained weights diverged) — train it "
                         "again with a lower --lr, or use the model it was trained from")
    return probs


def evaluate(session, images, *, threads=None, stop=None) -> dict:
    """Metrics of `session` on `images` (a folder named after the model's labels, or samples).

    Returns metrics() without loss, plus labels and skipped (the report).
    Raises InputError when the folder is unusable or no image can be read.
    """
    samples = features.as_samples(images, labels=session.labels, what="images")
    samples.check_labels(len(session.labels))
    skipped = {}
    with features.pool_for(threads) as pool:
        probs, labels = predict(session, samples, pool, skipped=skipped, stop=stop)
    if not len(labels):
        raise InputError(f"none of the {len(samples)} images in {images} could be read — check the files")
    check_outputs(session, probs)
    result = metrics(probs, labels, session.labels)
    result.pop("loss")
    result["labels"] = list(session.labels)
    result["skipped"] = skipped_report(skipped)
    return result


def top_k(session, paths, k=5):
    """([{path, top_k: [{label, probability}]}], [{path, reason}]) for image files `paths`."""
    images, ok, skipped = [], [], []
    for path in paths:
        try:
            images.append(data.load_image(path, session.image_size))
            ok.append(path)
        except data.ImageError as e:
            skipped.append({"path": path, "reason": e.reason})
        except OSError as e:  # missing file, a folder
            skipped.append({"path": path, "reason": e.strerror or str(e)})
    predictions = []
    if images:
        probs = check_outputs(session, session.predict(np.stack(images)))
        k = min(k, probs.shape[1])
        for path, p in zip(ok, probs):
            top = np.argsort(-p, kind="stable")[:k]
            predictions.append({"path": path, "top_k": [
                {"label": session.labels[i], "probability": float(p[i])} for i in top]})
    return predictions, skipped

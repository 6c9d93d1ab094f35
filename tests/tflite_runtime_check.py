"""Exercise every signature of a tftl model in whichever TFLite runtime is installed.

Run by tests/test_tflite_runtime.py inside a second virtual environment (tflite_runtime
2.14 needs numpy<2, so it cannot share the TensorFlow venv), and inside the main venv
(ai_edge_litert) for the parity reference. Imports only numpy, Pillow, the standard
library and tftl.runtime (PYTHONPATH=<repo>); TFTL_RUNTIME picks the runtime.

    python tests/tflite_runtime_check.py MODEL.tflite --images DIR [--steps 5] [--lr 0.001] [--dump OUT.npz]

DIR holds one folder per class (flowers5/train). Prints one JSON object on stdout:
  runtime, runtime_version, numpy_version, signatures, first_loss (one train step from the
  exported state), losses (`steps` train steps on one fixed batch), feature_losses
  (train_features steps), restore_exact / restore_state_exact (save -> restore into a fresh
  interpreter reproduces infer / save bit for bit), replay_exact (restoring the exported
  state and training again reproduces the first loss bit for bit), and on a load failure
  load_error (the runtime's message) instead of the rest.
"""

import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tftl.runtime import contract, data, modelfile  # noqa: E402
from tftl.runtime import interpreter as rt  # noqa: E402


def runtime_version(name):
    try:
        from importlib import metadata
        return metadata.version({"ai_edge_litert": "ai-edge-litert", "tflite_runtime": "tflite-runtime"}[name])
    except Exception:  # version is informational only
        return "unknown"


def batch_of_photos(folder, size, batch, num_labels):
    """`batch` photos (one per class in turn, sorted) as float32 [batch, size, size, 3] and labels."""
    classes = sorted(d for d in os.listdir(folder) if os.path.isdir(os.path.join(folder, d)))[:num_labels]
    files = {c: sorted(f for f in os.listdir(os.path.join(folder, c)) if data.is_image_file(f)) for c in classes}
    images, labels = [], []
    k = 0
    while len(images) < batch:
        label = k % len(classes)
        name = files[classes[label]][k // len(classes)]
        images.append(data.load_image(os.path.join(folder, classes[label], name), size))
        labels.append(label)
        k += 1
    return np.stack(images).astype(np.float32), np.asarray(labels, np.int32)


def same_state(a, b):
    return sorted(a) == sorted(b) and all(np.array_equal(a[k], b[k]) for k in a)


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("model")
    p.add_argument("--images", required=True)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--lr", type=float, default=0.001)
    p.add_argument("--dump", help="write the exported state's infer probabilities and extract features (.npz)")
    a = p.parse_args(argv)

    name = rt.runtime_name()
    out = dict(runtime=name, runtime_version=runtime_version(name), numpy_version=np.__version__)
    mf = modelfile.read_model(a.model)
    try:
        interp = rt.load_interpreter(mf.flatbuffer)
    except (ValueError, RuntimeError) as e:
        out["load_error"] = str(e)
        print(json.dumps(out))
        return 0
    sigs = interp.get_signature_list()
    out["signatures"] = sorted(sigs)
    run = interp.get_signature_runner

    size, batch = mf.metadata["image_size"], mf.metadata["batch"]
    images, labels = batch_of_photos(a.images, size, batch, mf.metadata["num_labels"])
    lr = np.full(1, a.lr, np.float32)  # f32[1] (contract tftl-3)

    initial = {k: np.array(v) for k, v in run("save")(token=np.zeros(1, np.float32)).items()}
    out["state_tensors"] = len(initial)
    probs0 = np.array(run("infer")(images=images)["probabilities"])
    feats0 = np.array(run("extract")(images=images)["features"])
    out["probs_sum_ok"] = bool(np.allclose(probs0.sum(axis=1), 1.0, atol=1e-4))
    if a.dump:
        np.savez(a.dump, probabilities=probs0, features=feats0)

    losses = []
    for _ in range(a.steps):
        losses.append(contract.first(run("train")(images=images, labels=labels, learning_rate=lr)["loss"]))
    out["losses"] = losses
    out["first_loss"] = losses[0]

    feats = np.array(run("extract")(images=images)["features"])
    out["feature_shape"] = list(feats.shape[1:])
    ones = np.ones(batch, np.float32)
    out["feature_losses"] = [
        contract.first(run("train_features")(features=feats, labels=labels, sample_weight=ones, learning_rate=lr)["loss"])
        for _ in range(a.steps)
    ]
    probs_f = np.array(run("infer_features")(features=feats)["probabilities"])
    probs1 = np.array(run("infer")(images=images)["probabilities"])
    out["infer_features_matches_infer"] = float(np.max(np.abs(probs_f - probs1)))
    trained = {k: np.array(v) for k, v in run("save")(token=np.zeros(1, np.float32)).items()}
    out["state_changed"] = not same_state(initial, trained)

    # A fresh interpreter: restore the trained state, infer must match bit for bit.
    fresh = rt.load_interpreter(mf.flatbuffer)
    ok = fresh.get_signature_runner("restore")(**trained)["ok"]
    out["restore_ok"] = float(np.asarray(ok).reshape(-1)[0])
    probs2 = np.array(fresh.get_signature_runner("infer")(images=images)["probabilities"])
    out["restore_exact"] = bool(np.array_equal(probs1, probs2))
    restored = {k: np.array(v) for k, v in fresh.get_signature_runner("save")(token=np.zeros(1, np.float32)).items()}
    out["restore_state_exact"] = same_state(trained, restored)

    # Back to the exported state: the first train step repeats exactly.
    fresh.get_signature_runner("restore")(**initial)
    again = contract.first(fresh.get_signature_runner("train")(images=images, labels=labels, learning_rate=lr)["loss"])
    out["replay_exact"] = again == losses[0]
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What a fine-tuned model file weighs: the deployable file tftl writes (weights and BN
statistics) against one that also carries the optimizer state, and what deflate would save.

    python bench/model_size.py MODEL.tflite [--out bench/model_size.json]

MODEL is an export (for the README's figure: mbv2, ImageNet weights, 224 px, MobileTL-3,
batch 8). The state written is the export's own (one Adam step on random images first, so the
optimizer slots are not all zero, as after any real run).
"""

import argparse
import json
import os
import tempfile
import zlib

import numpy as np

from tftl.runtime import modelfile
from tftl.runtime.files import atomic_write
from tftl.runtime.session import Session


def _sizes(session, state, folder, name) -> dict:
    npz = bytes(modelfile.state_npz_bytes(dict(state)))
    path = os.path.join(folder, f"{name}.tflite")
    modelfile.save_model(path, session.model_file, session.labels, modelfile.state_npz_bytes(dict(state)))
    return {"file_mb": round(os.path.getsize(path) / 1e6, 2), "state_npz_mb": round(len(npz) / 1e6, 2),
            "state_npz_deflated_mb": round(len(zlib.compress(npz, 6)) / 1e6, 2), "tensors": len(state)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model")
    p.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "model_size.json"))
    a = p.parse_args(argv)
    s = Session(a.model, threads=1)
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (s.batch, s.image_size, s.image_size, 3)).astype(np.float32)
    s.train_step(images, np.arange(s.batch, dtype=np.int32) % len(s.labels), 1e-4)
    state = s.state()
    with tempfile.TemporaryDirectory() as folder:
        result = {"model": os.path.basename(a.model), "export_mb": round(os.path.getsize(a.model) / 1e6, 2),
                  "flatbuffer_mb": round(len(s.model_file.flatbuffer) / 1e6, 2),
                  "flatbuffer_deflated_mb": round(len(zlib.compress(s.model_file.flatbuffer, 6)) / 1e6, 2),
                  "deployable": _sizes(s, modelfile.deployable(s.model_file, state), folder, "deployable"),
                  "with_optimizer": _sizes(s, state, folder, "with_optimizer")}
    with atomic_write(a.out) as f:
        f.write((json.dumps(result, indent=1) + "\n").encode())
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

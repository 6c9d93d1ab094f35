"""Shared inputs for the hardening, fuzz and adversarial tests (not a test module).

`tiny_flatbuffer()` converts, in a subprocess, a real TFLite model with the contract's
infer/save/restore signatures (batch 2, 8 px, 3 labels, state dense__kernel [3,3],
dense__bias [3], opt_step [1]) so the readers can be checked against a graph's declared
shapes. It is converted once per pytest run (cached under the session's base temp).
"""

import io
import json
import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest

B, R, K = 2, 8, 3
LABELS = ["daisy", "roses", "tulips"]
STATE_SHAPES = {"dense__kernel": (3, 3), "dense__bias": (3,), "opt_step": (1,)}
META = {"format": "tftl-2", "model": "tiny", "scheme": "ft_last", "image_size": R, "batch": B,
        "feature_shape": [R, R, 3], "trunk_end": None, "state_names": sorted(STATE_SHAPES),
        "preprocessing": {"input": "RGB float32 0..255"}}

_CONVERT = r'''
import sys
import tensorflow as tf
B, R = 2, 8
class Tiny(tf.Module):
    @tf.function(input_signature=[tf.TensorSpec([B, R, R, 3], tf.float32, name="images")])
    def infer(self, images):
        return {"probabilities": tf.nn.softmax(tf.reduce_mean(images, axis=[1, 2]))}
    @tf.function(input_signature=[tf.TensorSpec([1], tf.float32, name="token")])
    def save(self, token):
        z = 0 * token[0]
        return {"dense__kernel": tf.ones([3, 3]) + z, "dense__bias": tf.zeros([3]) + z,
                "opt_step": tf.zeros([1]) + 0 * token}
    @tf.function(input_signature=[tf.TensorSpec([3, 3], tf.float32, name="dense__kernel"),
                                  tf.TensorSpec([3], tf.float32, name="dense__bias"),
                                  tf.TensorSpec([1], tf.float32, name="opt_step")])
    def restore(self, dense__kernel, dense__bias, opt_step):
        ok = tf.reduce_all(tf.math.is_finite(dense__kernel)) & tf.reduce_all(tf.math.is_finite(dense__bias))
        return {"ok": tf.reshape(tf.cast(ok, tf.float32), [1]) + 0 * opt_step}
m = Tiny()
fns = [m.infer.get_concrete_function(), m.save.get_concrete_function(), m.restore.get_concrete_function()]
open(sys.argv[1], "wb").write(tf.lite.TFLiteConverter.from_concrete_functions(fns, m).convert())
'''


def tiny_flatbuffer(tmp_path_factory) -> bytes:
    """The converted tiny model's flatbuffer bytes (TensorFlow needed, in a subprocess)."""
    pytest.importorskip("tensorflow")
    path = tmp_path_factory.getbasetemp() / "tiny_contract_model.fb"
    if not path.exists():
        tmp = path.with_suffix(".part")
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
        subprocess.run([sys.executable, "-c", _CONVERT, str(tmp)], check=True, env=env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.replace(tmp, path)
    return path.read_bytes()


def npy_bytes(array) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.asarray(array), allow_pickle=False)
    return buf.getvalue()


def zip_bytes(members, compression=zipfile.ZIP_STORED) -> bytes:
    """A ZIP of {name: bytes} (a list of pairs allows duplicate names)."""
    buf = io.BytesIO()
    items = members.items() if isinstance(members, dict) else members
    with zipfile.ZipFile(buf, "w", compression) as z:
        for name, data in items:
            z.writestr(name, data)
    return buf.getvalue()


def good_state(**overrides) -> dict:
    state = {"dense__kernel": np.eye(3, dtype=np.float32), "dense__bias": np.ones(3, np.float32),
             "opt_step": np.array([4.0], np.float32)}
    state.update(overrides)
    return state


def model_bytes(flatbuffer: bytes, *, meta=None, labels_text=None, extra=None, meta_raw=None) -> bytes:
    """A tftl file: the flatbuffer + a ZIP whose members can be anything (hash filled in)."""
    from tftl.runtime import modelfile
    meta = dict(META if meta is None else meta)
    meta.setdefault("content_hash", modelfile.content_hash(flatbuffer))
    meta.setdefault("num_labels", len(LABELS))
    members = {"tftl.json": meta_raw if meta_raw is not None else json.dumps(meta).encode(),
               "labels.txt": ("\n".join(LABELS) + "\n").encode() if labels_text is None
               else labels_text.encode("utf-8", "surrogatepass")}
    members.update(extra or {})
    return flatbuffer + zip_bytes(members)


def one_line(exc, *, fix=True) -> str:
    """The message of `exc`, asserting it is one line and (fix) says what to do (' — ')."""
    message = str(exc)
    assert "\n" not in message and "\r" not in message, message
    assert not fix or " — " in message, message
    return message

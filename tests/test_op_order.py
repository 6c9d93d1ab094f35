"""The exporter's operator order (converters/op_order.py) changes memory, never a result.

Real model (mbv2 96 px, ImageNet weights, MobileTL-2) on real flowers5 photos: the same file
with its operators in a random valid order and in the pass's order trains bit for bit the
same (losses, predictions and every state tensor after three steps, with and without
XNNPACK), and the pass lowers the estimated arena peak of the random order. The memory itself
is measured by bench/trainer_rss.py, not asserted here."""

import numpy as np
import pytest

from converters import op_order
from conftest import FLOWER_CLASSES, flowers_subset
from tftl.runtime import contract, data
from tftl.runtime import interpreter as rt


def _shuffled(flatbuffer, seed):
    """The same model with every signature's operators in a random topological order that
    keeps the pass's own side-effect dependencies (written the way the pass writes its own)."""
    out, rng, written = bytearray(flatbuffer), np.random.default_rng(seed), set()
    for g in op_order._graphs(flatbuffer).values():
        if g.sg._tab.Pos in written:
            continue
        written.add(g.sg._tab.Pos)
        waiting = [len(d) for d in g.deps]
        ready, order = [i for i, w in enumerate(waiting) if w == 0], []
        while ready:
            node = ready.pop(int(rng.integers(len(ready))))
            order.append(node)
            for c in g.rdeps[node]:
                waiting[c] -= 1
                if waiting[c] == 0:
                    ready.append(c)
        assert sorted(order) == list(range(len(g.ops)))
        g.write_order(out, order)
    return bytes(out)


def _three_steps(flatbuffer, images, labels, signature, xnnpack):
    interp = rt.load_interpreter(flatbuffer, threads=1, xnnpack=xnnpack)
    if signature == contract.TRAIN_FEATURES:
        feats = rt.signature_runner(interp, contract.EXTRACT)(images=images)
        inputs = dict(features=next(iter(feats.values())))
    else:
        inputs = dict(images=images)
    step = rt.signature_runner(interp, signature)
    extra = {k: v for k, v in dict(labels=labels, sample_weight=np.ones(len(labels), np.float32),
                                    learning_rate=np.array([2e-3], np.float32)).items()
             if k in step.get_input_details()}
    outs = [step(**inputs, **extra) for _ in range(3)]
    state = rt.signature_runner(interp, contract.SAVE)(token=np.zeros([1], np.float32))
    return outs, state


@pytest.fixture(scope="module")
def batch(mbv2_flowers, tmp_path_factory):
    root = flowers_subset(tmp_path_factory.mktemp("order") / "train", "train", 2)
    paths = sorted(p for p in root.rglob("*") if p.is_file())[:8]
    images = np.stack([data.load_image(str(p), 96) for p in paths]).astype(np.float32)
    labels = np.array([FLOWER_CLASSES.index(p.parent.name) for p in paths], np.int32)
    return images, labels


@pytest.mark.parametrize("signature", [contract.TRAIN_FEATURES, contract.TRAIN])
def test_reordered_operators_train_bit_for_bit_the_same(mbv2_flowers, batch, signature):
    exported = mbv2_flowers.read_bytes()
    shuffled = _shuffled(exported, seed=3)
    ordered, peaks = op_order.memory_order(shuffled)
    before, after = peaks[signature]
    assert after < before, f"{signature}: the pass did not lower the estimate ({before} -> {after})"
    assert op_order.estimate(ordered)[signature] == after
    for xnnpack in (True, False):
        (out_a, state_a), (out_b, state_b) = (_three_steps(f, *batch, signature, xnnpack)
                                              for f in (shuffled, ordered))
        losses = [float(o["loss"][0]) for o in out_a]
        assert losses[2] < losses[0], losses            # it trains
        for a, b in zip(out_a, out_b):
            for k in a:
                np.testing.assert_array_equal(a[k], b[k], err_msg=f"{signature} {k}")
        assert state_a.keys() == state_b.keys()
        for k in state_a:
            np.testing.assert_array_equal(state_a[k], state_b[k], err_msg=f"state {k}")
    rt.release_memory()


def test_the_exporter_writes_the_memory_order(mbv2_flowers):
    """The exported file is already in the pass's order: running it again gains nothing, and
    every signature's estimate is at most that of a random valid order."""
    exported = mbv2_flowers.read_bytes()
    own = op_order.estimate(exported)
    _, again = op_order.memory_order(exported)
    assert {k: a for k, (a, _) in again.items()} == own
    assert all(b == a for a, b in again.values()), again
    shuffled = op_order.estimate(_shuffled(exported, seed=4))
    assert own[contract.TRAIN_FEATURES] < shuffled[contract.TRAIN_FEATURES]

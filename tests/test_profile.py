"""Analytical profiler (tftl.profile): paper numbers, model-level sanity, CLI."""

import json
import os
import subprocess
import sys

import pytest

from tftl import archs, profile as prof
from tftl.profile import irb_activation_bytes, irb_profile, profile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
T1 = dict(batch=8, channels=96, height=7, width=7, kernel=5)  # MobileTL Table 1 input
V3 = dict(se=True, activation="hard_swish")


def _saving(v, m):
    return 100.0 * (1.0 - m / v)


# ---------------------------------------------------------------- MobileTL Table 1 / Figure 1


def test_table1_mbv2_block():
    assert irb_activation_bytes(**T1, expansion=1) == 912_576  # "0.913 MB"


def test_table1_mbv3_block():
    assert irb_activation_bytes(**T1, expansion=1, **V3) == 1_361_688  # "1.362 MB"


def test_table1_parameter_counts():
    # "# Param." column: convs + BN scale/shift (+ SE convs with bias for MBV3)
    assert irb_profile(**T1, expansion=1)["trainable_params"] == 21_408
    assert irb_profile(**T1, expansion=1, **V3)["trainable_params"] == 26_136


def test_figure1_mbv3_saving():
    v = irb_activation_bytes(**T1, expansion=6, **V3)
    m = irb_activation_bytes(**T1, expansion=6, **V3, scheme="mobiletl")
    assert (v, m) == (6_664_848, 3_108_624)
    assert round(_saving(v, m), 1) == 53.4  # 53.36%; the caption truncates to 53.3


def test_figure1_mbv2_saving_relu6_two_bits():
    v = irb_activation_bytes(**T1, expansion=6, relu6_mask_bits=2)
    m = irb_activation_bytes(**T1, expansion=6, scheme="mobiletl")
    assert (v, m) == (4_026_624, 2_163_840)
    assert round(_saving(v, m), 1) == 46.3


def test_figure1_mbv2_saving_relu6_one_bit():
    v = irb_activation_bytes(**T1, expansion=6, relu6_mask_bits=1)
    m = irb_activation_bytes(**T1, expansion=6, scheme="mobiletl")
    assert round(_saving(v, m), 1) == 45.5


def test_irb_mobiletl_independent_of_relu6_bits_and_stride_shrinks():
    a = irb_activation_bytes(**T1, expansion=6, scheme="mobiletl", relu6_mask_bits=1)
    b = irb_activation_bytes(**T1, expansion=6, scheme="mobiletl", relu6_mask_bits=2)
    assert a == b  # MobileTL replaces every ReLU6 mask by the 1-bit sign mask
    assert irb_activation_bytes(**T1, expansion=6, stride=2) < irb_activation_bytes(
        **T1, expansion=6)
    with pytest.raises(ValueError):
        irb_activation_bytes(**T1, expansion=6, scheme="bogus")


# ---------------------------------------------------------------- model level


@pytest.fixture(scope="module")
def v3():
    return {s: profile("mbv3_small", s) for s in prof.schemes.SCHEMES}


@pytest.fixture(scope="module")
def v2():
    return {s: profile("mbv2", s) for s in prof.schemes.SCHEMES}


def test_mobiletl_saves_over_ft_blocks_mbv3_small(v3):
    ft, mtl = v3["ft_blocks"]["activation_bytes"], v3["mobiletl"]["activation_bytes"]
    # bool sign masks (1 byte / element): 44.5% less; bit-packed masks: 50.1% less
    assert 44.0 <= _saving(ft, mtl) <= 45.0
    packed = profile("mbv3_small", "mobiletl", packed_masks=True)["activation_bytes"]
    assert 49.5 <= _saving(ft, packed) <= 50.5
    assert v3["mobiletl"]["peak_bytes"] < v3["ft_blocks"]["peak_bytes"]


def test_ft_all_mbv3_small_matches_figure4(v3):
    # MobileTL Figure 4 text: global fine-tuning accumulates 129.7 MB of activations
    assert round(v3["ft_all"]["activation_bytes"] / 1e6, 1) == 129.7


def test_ft_last_saves_only_classifier_input(v3, v2):
    for res, cin in ((v3["ft_last"], 1024), (v2["ft_last"], 1280)):
        saved = {L["name"]: L["saved_bytes"] for L in res["layers"] if L["saved_bytes"]}
        assert list(saved) == [res["layers"][-1]["name"]]
        assert res["activation_bytes"] == 8 * cin * 4
        # nothing below the classifier has a backward pass
        assert all(L["backward_flops"] == 0 for L in res["layers"][:-1])


def test_activation_ordering(v3, v2):
    for r in (v3, v2):
        a = {s: r[s]["activation_bytes"] for s in r}
        assert a["ft_all"] > a["ft_blocks"] > a["ft_last"]
        assert a["ft_all"] > a["ft_norm"] > a["ft_bias"]
        assert a["mobiletl"] < a["ft_blocks"]
        p = {s: r[s]["trainable_params"] for s in r}
        assert p["ft_all"] > p["ft_blocks"] > p["ft_norm"] > p["ft_last"]


def test_no_backward_below_lowest_trainable_layer(v3):
    res = v3["mobiletl"]
    first = next(i for i, L in enumerate(res["layers"]) if L["trains"])
    assert res["layers"][first]["block"] == archs.num_blocks("mbv3_small") - 3
    below = res["layers"][:first]
    assert all(L["backward_flops"] == 0 and L["saved_bytes"] == 0 for L in below)
    lowest = res["layers"][first]  # weight gradient only, no input gradient
    assert not lowest["needs_input_grad"]
    assert lowest["backward_flops"] == 2 * lowest["macs"]
    assert v3["mobiletl"]["backward_flops"] < 0.5 * v3["ft_all"]["backward_flops"]


def test_forward_macs_match_published():
    mbv2 = profile("mbv2", "ft_all", batch=1, num_classes=1000)["forward_macs"]
    assert abs(mbv2 - 300e6) <= 0.05 * 300e6  # 300.8M
    v3s = profile("mbv3_small", "ft_all", batch=1, num_classes=1000)["forward_macs"]
    assert 56e6 <= v3s <= 66e6  # 56.5M
    r = profile("mbv2", "ft_all", batch=8)
    assert r["forward_flops"] > 2 * r["forward_macs"]
    assert r["backward_flops"] > 1.8 * r["forward_flops"]


@pytest.mark.parametrize("model,keras_total", [
    ("mbv2", 3_538_984), ("mbv3_small", 2_554_968), ("mbv3_large", 5_507_432)])
def test_parameter_counts_match_keras(model, keras_total):
    r = profile(model, "ft_all", num_classes=1000)
    assert r["trainable_params"] + r["frozen_params"] == keras_total
    r = profile(model, "mobiletl", num_classes=1000)
    assert r["trainable_params"] + r["frozen_params"] == keras_total


def test_memory_accounting_identities(v3, v2):
    for r in list(v3.values()) + list(v2.values()):
        assert r["peak_bytes"] == (r["peak_activation_bytes"] + r["trainable_param_bytes"]
                                   + r["frozen_param_bytes"] + r["optimizer_state_bytes"])
        assert r["peak_activation_bytes"] >= r["activation_bytes"]
        assert r["activation_bytes"] == sum(L["saved_bytes"] for L in r["layers"])
        assert r["trainable_param_bytes"] == 4 * r["trainable_params"]
        assert r["optimizer_state_bytes"] >= 8 * r["trainable_params"]
    ft_last = v3["ft_last"]  # no BN trains: optimizer state is Adam's slots only
    assert ft_last["optimizer_state_bytes"] == 8 * ft_last["trainable_params"] == 8 * 10_250


def test_mask_conventions():
    # exact ReLU6 at 2 bits adds 1 bit per ReLU6 element of the trained mbv2 blocks
    one = profile("mbv2", "ft_blocks")["activation_bytes"]
    two = profile("mbv2", "ft_blocks", relu6_mask_bits=2)["activation_bytes"]
    assert two > one
    # mbv3_small has no ReLU6, only ReLU and hard-swish
    assert profile("mbv3_small", "ft_blocks", relu6_mask_bits=2)["activation_bytes"] == \
        profile("mbv3_small", "ft_blocks")["activation_bytes"]
    # packed sign masks only change mobiletl
    assert profile("mbv2", "ft_blocks", packed_masks=True)["activation_bytes"] == one


def test_tinytl_adds_lite_residual(v3):
    names = [L["name"] for L in v3["tinytl"]["layers"]]
    assert any(n.endswith("lite_conv") for n in names)
    assert v3["tinytl"]["trainable_params"] > v3["ft_bias"]["trainable_params"]
    assert v3["tinytl"]["forward_flops"] > v3["ft_bias"]["forward_flops"]
    assert v3["ft_blocks"]["blocks"] == 3 and v3["tinytl"]["blocks"] == 0


def test_bad_arguments_raise():
    for kw in (dict(model="resnet"), dict(model="mbv2", scheme="nope"),
               dict(model="mbv2", blocks=0), dict(model="mbv2", blocks=99),
               dict(model="mbv2", image_size=100), dict(model="mbv2", batch=0)):
        with pytest.raises(ValueError):
            profile(**kw)


# ---------------------------------------------------------------- CLI


def test_cli_json(capsys):
    assert prof.main(["--model", "mbv3_small", "--scheme", "mobiletl", "--blocks", "3",
                      "--batch", "8", "--image-size", "224", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["scheme"] == "mobiletl" and data["blocks"] == 3
    assert data["activation_bytes"] == profile("mbv3_small")["activation_bytes"]


def test_cli_all_schemes(capsys):
    assert prof.main(["--model", "mbv2", "--all-schemes"]) == 0
    out = capsys.readouterr().out.splitlines()
    rows = [l for l in out if l.split() and l.split()[0].split("-")[0] in prof.schemes.SCHEMES]
    assert len(rows) == 7
    assert prof.main(["--all-schemes", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 7


@pytest.mark.parametrize("args", [["--scheme", "bogus"], ["--model", "resnet50"],
                                  ["--blocks", "0"], ["--blocks", "x"]])
def test_cli_bad_arguments_exit_2(capsys, args):
    with pytest.raises(SystemExit) as e:
        prof.main(args)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "error" in err


def test_cli_module_entry_point():
    r = subprocess.run([sys.executable, "-m", "tftl.profile", "--scheme", "bogus"],
                       cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "unknown scheme 'bogus'" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_cli_plot(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    out = tmp_path / "fig4.png"
    assert prof.main(["--all-schemes", "--plot", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bool_masks_count_exact_masks_at_a_byte():
    """bool_masks=True: exact ReLU6 masks cost 8 bits (as stored); MobileTL's sign masks and
    everything else are unchanged."""
    base = prof.profile("mbv2", "ft_bias", batch=2, image_size=96)
    stored = prof.profile("mbv2", "ft_bias", batch=2, image_size=96, bool_masks=True)
    masks = sum(r["saved_bytes"] for r in base["layers"] if r["kind"] == "act")
    assert masks > 0 and stored["activation_bytes"] - base["activation_bytes"] == 7 * masks
    m = prof.profile("mbv2", "mobiletl", batch=2, image_size=96)
    assert prof.profile("mbv2", "mobiletl", batch=2, image_size=96, bool_masks=True)[
        "activation_bytes"] >= m["activation_bytes"]


def test_physical_limit_of_a_streamed_trunk():
    """The streamed trainer's floor: mbv2's largest live trunk pair is a 112x112x96 BN / ReLU6
    (input and output, fp32) per image; the other parts are the step's own at the batch."""
    from tftl.plan import ModelPlan
    plan = ModelPlan.build("mbv2", scheme="mobiletl", blocks=3, image_size=224, num_classes=10)
    assert prof.trunk_pair_bytes(plan, 1) == 112 * 112 * 96 * 2 * 4
    assert prof.trunk_pair_bytes(plan, 4) == 4 * prof.trunk_pair_bytes(plan, 1)
    lim = prof.physical_limit(plan, 8, 1)
    full = prof.profile_plan(plan, 8, bool_masks=True)
    assert lim["saved_activations"] == full["activation_bytes"]
    assert lim["optimizer_state"] == full["optimizer_state_bytes"]
    assert lim["total"] == sum(lim[k] for k in ("weights", "optimizer_state", "saved_activations", "trunk_pair"))
    assert lim["total"] < full["peak_bytes"]  # streaming beats holding the trunk at the batch
    # the exporter's "auto" micro-batch keeps the trunk's workspace under the step's activations
    m = prof.micro_batch_for(plan, 8)
    assert 1 <= m < 8 and prof.trunk_pair_bytes(plan, m) <= full["peak_activation_bytes"]

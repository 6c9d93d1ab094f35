"""Fast checks of the benchmark's pure-Python parts (no TensorFlow, no exports)."""

import os
import sys

import pytest

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench")
sys.path.insert(0, BENCH)

common = pytest.importorskip("common")


def test_parse_label():
    assert common.parse_label("mobiletl-3") == ("mobiletl", 3)
    assert common.parse_label("ft_blocks-5") == ("ft_blocks", 5)
    assert common.parse_label("ft_all") == ("ft_all", 3)


def test_export_path_depends_on_sources_and_settings():
    a = common.export_path("mbv2", "mobiletl-3", src="x")
    assert a != common.export_path("mbv2", "mobiletl-3", src="y")
    assert a != common.export_path("mbv2", "mobiletl-3", classes=5, src="x")
    assert a.startswith(common.CACHE)


def test_layer_attribution():
    pytest.importorskip("numpy")
    import tflite_graph
    names = {"conv_1", "conv_1_bn", "expanded_conv_9_expand_bn", "expanded_conv_1_expand",
             "expanded_conv_9_squeeze_excite_conv_1"}
    f = tflite_graph._layer_of
    assert f("conv_1_bn_1/add_12", names) == "conv_1_bn"
    assert f("conv_1/Conv2D5", names) == "conv_1"
    assert f("expanded_conv_9_expand_bn_1/add_12", names) == "expanded_conv_9_expand_bn"
    assert f("expanded_conv_9_squeeze_excite_conv_1_2/MatMul", names) == \
        "expanded_conv_9_squeeze_excite_conv_1"
    assert f("mul_14", names) is None
    assert f("Relu6_1;expanded_conv_1_expand_1/Conv2D", names) == "expanded_conv_1_expand"


def _probe(peak, loaded, ms, arena=10e6):
    return dict(peak_rss=peak, rss_loaded=loaded, rss_start=loaded / 2, median_ms=ms,
                median_cpu_ms=ms / 2, arena=dict(extent_bytes=arena, tensors=1,
                                                temporaries_bytes=0, largest_temporary_bytes=0),
                variables_bytes=1e6)


def _row(model, scheme, peak, ms, saved_blocks, tf=None):
    blocks = {"8": saved_blocks, "head": 1e6}
    row = dict(model=model, scheme=scheme, file_bytes=1e7,
               analytical=dict(peak_bytes=peak / 4, peak_activation_bytes=peak / 8,
                               activation_bytes=saved_blocks, trainable_param_bytes=1,
                               frozen_param_bytes=1, optimizer_state_bytes=1,
                               forward_flops=1e9, backward_flops=1e9,
                               saved_by_block=blocks, saved_trained_blocks=saved_blocks),
               graph=dict(saved_bytes=saved_blocks + 1e6, saved_trained_blocks=saved_blocks,
                          saved_by_block=blocks, saved_bool_bytes=0, ideal_peak_bytes=5e6,
                          saved_weight_derived_bytes=0, weight_copy_bytes=0, largest_saved=[],
                          largest_at_peak=[], live_at_peak_by_kind={}, ops=1, backward_ops=0,
                          tensors=1, sum_nonconst_bytes=1, peak_op=0, peak_op_name="ADD",
                          peak_phase="forward", op_counts={}),
               litert={"1": _probe(peak, 60e6, ms), "2": _probe(peak, 60e6, ms / 1.5)})
    if tf:
        row["tf"] = {"1": _probe(tf, 600e6, ms * 0.5)}
    return row


def test_targets_and_report():
    import report
    rows = {
        "mbv3_small/ft_all": _row("mbv3_small", "ft_all", 400e6, 900, 50e6),
        "mbv3_small/mobiletl-3": _row("mbv3_small", "mobiletl-3", 120e6, 300, 5e6, tf=800e6),
        "mbv3_small/ft_blocks-3": _row("mbv3_small", "ft_blocks-3", 130e6, 310, 10e6),
    }
    res = dict(memory=dict(rows=rows, threads=[1, 2], mode="quick", environment={}),
               train_cli=dict(skipped="no CLI"))
    tg = {name.split()[0]: v for name, v, _ in report.targets(res)}
    assert tg["T1a"] == "PASS"      # 400 / 120 > 3
    assert tg["T1b"] == "PASS"      # 900 / 300 = 3 >= 2 at both thread counts
    assert tg["T2"] == "PASS"       # 1 - 5/10 = 50%
    assert tg["T3"] == "MISS"       # LiteRT 300 ms vs TF 150 ms
    lines = report.memory_table(res, "mbv3_small")
    assert len(lines) == 2 + 3
    text = "\n".join(report.train_section(res))
    assert "SKIPPED" in text


def _recorded(*parts):
    import json
    path = os.path.join(BENCH, *parts)
    with open(path) as f:
        return json.load(f)


def test_cache_verdict_on_recorded_rows():
    """Issue 13 T4 = measured speed-up / FLOP bound >= 0.8, recomputed from the recorded
    tftl-train histories: the training part of the epochs, the cached run's first epoch left
    out, process CPU time preferred over wall when the history has it."""
    import copy
    import statistics

    import verdicts
    rows = _recorded("results.json")["cache_epochs"]["rows"]
    assert rows
    for et in rows:
        if not et.get("trained_flops") or "error" in et.get("cache", {"error": 1}):
            continue
        key = ("epoch_train_cpu_seconds" if all(et[k].get("epoch_train_cpu_seconds")
                                                for k in ("cache", "no_cache"))
               else "epoch_train_seconds")
        n = statistics.median(et["no_cache"][key])
        c = statistics.median(et["cache"][key][1:] or et["cache"][key])
        bound = (et["trunk_forward_flops"] + et["trained_flops"]) / et["trained_flops"]
        st = verdicts.cache_stats(et)
        assert st["measure"] == key
        assert abs(st["of_bound"] - (n / c) / bound) < 1e-9
        # The same row with CPU seconds: CPU wins, and the verdict flips at 0.8 of the bound.
        for want, of_bound in (("PASS", 0.81), ("MISS", 0.79)):
            cpu = copy.deepcopy(et)
            cpu["no_cache"]["epoch_train_cpu_seconds"] = [10.0, 10.0]
            first = 123.0  # the first cached epoch: ignored
            cpu["cache"]["epoch_train_cpu_seconds"] = [first, 10.0 / (of_bound * bound)]
            got = verdicts.cache_stats(cpu)
            assert got["basis"] == "cpu" and abs(got["of_bound"] - of_bound) < 1e-9
            (name, v, detail), = [t for t in verdicts.cache_targets({"cache_epochs": {"rows": [cpu]}})]
            assert v == want and f"{of_bound:.2f} of the bound" in detail, detail


def test_peers_verdicts_on_recorded_rows():
    """run_peers' ratios use the best peer per metric; T1 (mobiletl-3) and T2 bounds; a
    trainable-count mismatch between tftl and a peer is reported."""
    import copy
    sys.path.insert(0, os.path.join(BENCH, "peers"))
    import run_peers
    rows = _recorded("peers", "results.json")["rows"]
    checked = 0
    for key, row in rows.items():
        name, targets = run_peers.targets_for(key.split("/")[1])
        r = run_peers.ratios(row, targets)
        peers = {p: row[p] for p in run_peers.PEERS if run_peers._ok(row.get(p))}
        if not r:
            continue
        for metric in targets:
            best = min(v[metric] for v in peers.values())
            assert abs(r[metric][0] - row["tftl"][metric] / best) < 1e-12
        ok = all(r[m][0] <= b for m, b in targets.items())
        line, = [x for x in run_peers.verdicts({key: row}) if key in x]
        assert line.startswith("PASS" if ok else "MISS") and name in line
        checked += 1
        odd = copy.deepcopy(row)
        peer = next(iter(peers))
        odd[peer]["trainable_params"] = (row[peer].get("trainable_params") or 0) + 1
        odd["tftl"]["trainable_params"] = row[peer].get("trainable_params") or 0
        assert "MISMATCH" in run_peers.params_cell(odd)
    assert checked

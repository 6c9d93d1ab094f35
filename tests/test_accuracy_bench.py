"""bench/accuracy/run.py's plan and resume rule, and report.py's statistics and verdicts (issue 19).

No training: synthetic rows only.
"""

import importlib.util
import json
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _load(name):
    # by path: bench/run.py and bench/report.py share these modules' names
    spec = importlib.util.spec_from_file_location(f"accuracy_{name}", os.path.join(ROOT, "bench", "accuracy",
                                                                                   f"{name}.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


report, run = _load("report"), _load("run")


def row(ds, k, seed, method, acc, tag="default", rc=0):
    return dict(dataset=ds, per_class=k, seed=seed, method=method, tag=tag, rc=rc, test_accuracy=acc,
                regime=f"train-n{k}-s{seed}", train_accuracy=1.0, epochs=10, steps=500, losses=[0.1], wall_s=1.0)


def test_plan_order_and_resume(tmp_path, capsys):
    out = tmp_path / "results.json"
    out.write_text(json.dumps([row("weather4", 10, 0, "mobiletl-3", 0.9),
                               row("weather4", 10, 1, "mobiletl-3", None, rc=1),          # failed: rerun
                               row("weather4", 10, 2, "mobiletl-3", 0.9, tag="--lr 1e-3")]))  # other recipe
    assert run.done_keys(str(out)) == {("weather4", 10, 0, "mobiletl-3", "default"),
                                       ("weather4", 10, 2, "mobiletl-3", "--lr 1e-3")}
    assert run.main(["--datasets", "weather4", "dtd10", "--regimes", "10", "20", "--methods", "mobiletl-3",
                     "ft_blocks-3", "--out", str(out), "--dry-run"]) == 0
    todo = [tuple(line.split()) for line in capsys.readouterr().out.splitlines() if not line.startswith("[")]
    assert len(todo) == 2 * 2 * 2 * 3 - 1
    assert todo[0] == ("weather4", "10", "1", "mobiletl-3")  # seed 0 is done
    assert todo[5] == ("weather4", "10", "0", "ft_blocks-3")  # K=10: every MobileTL-3 run first
    assert all(t[1] == "10" for t in todo[:11]) and all(t[1] == "20" for t in todo[11:])


def test_export_command_and_labels(tmp_path):
    for c in ("sea", "forest"):
        (tmp_path / "ds" / "test" / c).mkdir(parents=True)
    assert run.labels_of(str(tmp_path), "ds") == ["forest", "sea"]
    cmd = run.export_cmd("l.txt", "ft_blocks-3", "o.tflite", weights="w.h5")
    assert cmd[cmd.index("--scheme") + 1] == "ft_blocks" and cmd[cmd.index("--blocks") + 1] == "3"
    assert "--blocks" not in run.export_cmd("l.txt", "ft_all", "o.tflite")
    assert run.model_path("/m", "ds", "mobiletl-3", src="abc") == "/m/ds_mbv2_r224_b8_mobiletl-3_int8_abc.tflite"


def test_report_stats_and_verdicts():
    s = report.stats({0: 0.80, 1: 0.82, 2: 0.84})
    assert abs(s["mean"] - 0.82) < 1e-12 and s["min"] == 0.80 and s["max"] == 0.84
    assert abs((s["hi"] - s["mean"]) - 4.303 * 0.02 / 3 ** 0.5) < 1e-9
    probe = {"rows": [dict(dataset=ds, per_class=10, seed=i, test_accuracy=0.80) for ds in ("a", "b")
                      for i in range(3)]}
    results = ([row("a", 10, i, "mobiletl-3", 0.83) for i in range(3)]      # +3 vs probe: PASS
               + [row("a", 10, i, "ft_blocks-3", 0.85) for i in range(3)]   # -2 vs ft_blocks: MISS
               + [row("b", 10, 0, "mobiletl-3", 0.81)])                      # +1: MISS, provisional
    text = report.render(results, probe, "default", ["cmd"])
    assert "| a | **0.800**" in text and "PASS (+3.0 pts)" in text and "MISS (-2.0 pts)" in text
    assert "- b, 10/class, T1: MISS (+1.0 pts, 1 seed, provisional)" in text
    assert "T1 1 PASS / 1 MISS; T2 0 PASS / 1 MISS" in text
    assert report.verdict({0: 0.9}, {0: 0.88}, 0.01, "T2")["ok"]  # above ft_blocks-3 passes

"""The runtime's import graph reads top to bottom (issue 21, item 4): no cycle, lazy imports
included; errors.py imports nothing of tftl; each band imports only from the bands below it;
and the names that were defined twice are defined once."""

import ast
import pathlib
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
RUNTIME = REPO / "tftl" / "runtime"
sys.path.insert(0, str(REPO / "tools"))
import import_floors  # noqa: E402

# io -> format -> engine -> training -> app: a module may import only from its own band or below.
BANDS = {
    "io": {"errors", "files", "safezip", "progress", "schedule", "metrics", "contract", "interpreter", "compiled",
           "stop", "probe", "rowfile"},
    "format": {"data", "checkpoint", "modelfile", "labels", "config", "spec", "subset"},
    "engine": {"session", "features", "vectors"},
    "training": {"loop", "evaluate"},
    "app": {"run", "cli", "check"},
}
ORDER = list(BANDS)


def band(module):
    return next(ORDER.index(b) for b, mods in BANDS.items() if module in mods)


def test_every_runtime_module_has_a_band():
    graph = import_floors.graph(str(RUNTIME))
    assert set(graph) == set().union(*BANDS.values())


def test_no_import_cycle_lazy_imports_included():
    graph = import_floors.graph(str(RUNTIME))
    assert import_floors.find_cycle(graph) is None
    assert import_floors.report(str(RUNTIME))["floors"] <= 7


def test_no_import_points_up_a_band():
    graph = import_floors.graph(str(RUNTIME))
    up = [f"{m} -> {d}" for m, deps in graph.items() for d in deps if band(d) > band(m)]
    assert up == []


def test_find_cycle_sees_a_function_local_import(tmp_path):
    """The checker itself: a lazy import that closes a loop is a cycle (the test above can fail)."""
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from pkg import b\n")
    (pkg / "b.py").write_text("def f():\n    from pkg.a import x\n")
    assert import_floors.find_cycle(import_floors.graph(str(pkg))) == ["a", "b", "a"]
    (pkg / "b.py").write_text("import os\n")
    report = import_floors.report(str(pkg))
    assert report["cycle"] is None and report["floors"] == 2


def test_errors_imports_nothing_from_tftl():
    tree = ast.parse((RUNTIME / "errors.py").read_text())
    imports = [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]
    assert imports == []


def test_every_user_error_is_an_input_error():
    from tftl.runtime import checkpoint, contract, data, errors, interpreter, modelfile, session

    for cls in (modelfile.ModelFileError, checkpoint.CheckpointError, contract.ContractError, data.ImageError,
                interpreter.RuntimeNotFound, session.SessionError):
        assert issubclass(cls, errors.InputError), cls
    assert issubclass(interpreter.RuntimeNotFound, RuntimeError)  # callers that caught it still do


@pytest.mark.parametrize("name", ["STATE_NAME", "EXPORT_HINT", "MAX_THREADS", "atomic_write", "TrainState",
                                  "CHECKPOINT_NAME", "TRAIN_FORMAT", "state_npz_bytes", "save_model",
                                  "metrics", "pool_for", "Recipe", "fit_head"])
def test_defined_once(name):
    where = []
    for path in sorted(RUNTIME.glob("*.py")):
        for node in ast.parse(path.read_text()).body:
            targets = [node.name] if isinstance(node, (ast.FunctionDef, ast.ClassDef)) else \
                [t.id for t in getattr(node, "targets", []) if isinstance(t, ast.Name)]
            if name in targets:
                where.append(path.name)
    assert len(where) == 1, where


def test_checkpoint_format_written_once():
    hits = [p.name for p in RUNTIME.glob("*.py") if '"tftl-train-1"' in p.read_text()]
    assert hits == ["checkpoint.py"]


def test_a_training_run_does_not_walk_back_up_except_through_its_epoch_hook(exported, tmp_path):
    """tools/flag_walk.py: a tftl-train run enters no module already on its call stack except
    the app's on_epoch_end hook (before issue 21: the stop flag's check from features and loop,
    and a generator of run.py consumed in features, 58 such calls in a one-epoch run)."""
    import flag_walk
    from conftest import PI_MODEL, flowers_subset

    images = flowers_subset(tmp_path / "images", "train", 8, link=True)
    result = flag_walk.walk([str(exported(**PI_MODEL)), str(images), "--epochs", "1", "--threads", "1",
                             "--output", str(tmp_path / "out.tflite"), "--checkpoint-dir", str(tmp_path / "ckpt")])
    assert result["exit"] == 0 and len(result["modules"]) >= 12
    assert result["returns"] == {"loop -> run.epoch_done": 1, "run -> loop.history": 1}, result["returns"]

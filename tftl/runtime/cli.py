"""Command-line tools of the tftl runtime (no TensorFlow):

    tftl-train   model.tflite images/ [--val DIR | --val-split F] [--epochs N] [--output out.tflite]
    tftl-eval    model.tflite images/ [--json]
    tftl-predict model.tflite photo.jpg ... [--top-k 5] [--json]

Also `python -m tftl.runtime.cli train|eval|predict ...`. Exit status: 0 done, 1 training
diverged (NaN/inf loss or weights) or an internal error (with a traceback), 2 bad input
(one line on stderr), 130 interrupted (checkpoint saved).

The flags are the fields of `tftl.runtime.config` (each written once); the work is done by
`tftl.runtime.run.train` and `tftl.runtime.evaluate`.
"""

import errno
import json
import sys
import traceback

from tftl.runtime import config, errors, evaluate, files
from tftl.runtime.errors import EXIT_INTERNAL, EXIT_OK, EXIT_USAGE, InputError
from tftl.runtime.files import printable
from tftl.runtime.metrics import skipped_lines
from tftl.runtime.session import Session

TRAIN_EPILOG = ("Exit status: 0 done, 1 loss diverged (or an internal error, with a traceback), 2 bad input, "
                "130 interrupted (checkpoint saved; continue with --resume).")
EPILOG = "Exit status: 0 done, 1 internal error (with a traceback), 2 bad input, 130 interrupted."


def _error(prog, msg) -> int:
    print(f"{prog}: error: {printable(msg)}", file=sys.stderr)
    return EXIT_USAGE


def _run(prog, fn, cfg) -> int:
    """Call fn(cfg) -> int. Expected failures are one stderr line with their exit code; any
    other exception is a bug: its traceback and an "internal error" line, exit 1."""
    try:
        return fn(cfg)
    except errors.Interrupted:
        return errors.EXIT_INTERRUPTED
    except KeyboardInterrupt:
        print(f"{prog}: aborted", file=sys.stderr)
        return errors.EXIT_INTERRUPTED
    except errors.Diverged as e:
        print(f"{prog}: error: {printable(e)}", file=sys.stderr)
        return errors.EXIT_DIVERGED
    except InputError as e:
        return _error(prog, str(e) or type(e).__name__)
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            return _error(prog, files.write_problem(e))
        where = f" {e.filename}" if e.filename else ""
        return _error(prog, f"cannot access{where}: {e.strerror or e}")
    except Exception as e:  # noqa: BLE001 — reported, never passed off as bad input
        traceback.print_exc()
        print(f"{prog}: internal error (a bug in tftl, not in your input): {type(e).__name__}: {printable(e)}",
              file=sys.stderr)
        return EXIT_INTERNAL


def _parse(cls, prog, description, argv, epilog=EPILOG):
    """(config, None) or (None, exit code): parse_args without SystemExit (for main(argv))."""
    try:
        args = config.parser(cls, prog, description, epilog).parse_args(argv)
    except SystemExit as e:
        return None, (e.code if isinstance(e.code, int) else EXIT_USAGE)
    return config.from_args(cls, args), None


def train_main(argv=None) -> int:
    cfg, code = _parse(config.TrainConfig, "tftl-train", "Fine-tune a tftl model on images/ (one subfolder per "
                       "class) with the TFLite runtime.", argv, TRAIN_EPILOG)
    if cfg is None:
        return code
    from tftl.runtime import run

    return _run("tftl-train", lambda c: (run.train(c), EXIT_OK)[1], cfg)


def _evaluate(cfg) -> int:
    session = Session(cfg.model, threads=cfg.threads)
    session.require("infer", purpose="evaluation")
    result = evaluate.evaluate(session, cfg.images, threads=cfg.threads)
    if cfg.json:
        print(json.dumps(result))
    else:
        correct = int(round(result["accuracy"] * result["n"]))
        print(f"accuracy {result['accuracy']:.4f}  ({correct}/{result['n']} images, {printable(cfg.images)})")
        width = max(len(name) for name in result["per_class"])
        for name, m in result["per_class"].items():
            print(f"  {name:<{width}}  {m['accuracy']:.4f}  (n={m['n']})")
    _warn_skipped(result["skipped"])
    return EXIT_OK


def eval_main(argv=None) -> int:
    cfg, code = _parse(config.EvalConfig, "tftl-eval", "Top-1 accuracy of a tftl model on images/ (one subfolder "
                       "per class, named after the model's labels).", argv)
    return code if cfg is None else _run("tftl-eval", _evaluate, cfg)


def _predict(cfg) -> int:
    session = Session(cfg.model, threads=cfg.threads)
    session.require("infer", purpose="prediction")
    predictions, skipped = evaluate.top_k(session, cfg.photos, cfg.top_k)
    if cfg.json:
        print(json.dumps({"predictions": predictions, "skipped": skipped}))
    else:
        for pred in predictions:
            print(printable(pred["path"]))
            for item in pred["top_k"]:
                print(f"  {100 * item['probability']:6.2f}%  {item['label']}")
    for s in skipped:
        print(f"warning: skipped {printable(s['path'])}: {printable(s['reason'])}", file=sys.stderr)
    if not predictions:
        raise InputError("none of the photos could be read")
    return EXIT_OK


def _warn_skipped(skipped):
    for line in skipped_lines(skipped):
        print(line, file=sys.stderr)


def predict_main(argv=None) -> int:
    cfg, code = _parse(config.PredictConfig, "tftl-predict", "Top-k labels of photos with a tftl model.", argv)
    return code if cfg is None else _run("tftl-predict", _predict, cfg)


COMMANDS = {"train": train_main, "eval": eval_main, "predict": predict_main}


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] not in COMMANDS:
        print(f"usage: python -m tftl.runtime.cli {{{','.join(COMMANDS)}}} ...", file=sys.stderr)
        return EXIT_USAGE
    return COMMANDS[argv[0]](argv[1:])


if __name__ == "__main__":
    sys.exit(main())

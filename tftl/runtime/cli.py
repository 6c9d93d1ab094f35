"""Command-line tools of the tftl runtime (no TensorFlow):

    tftl-train   model.tflite images/ [--val DIR | --val-split F] [--epochs 10] [--output out.tflite]
    tftl-eval    model.tflite images/ [--json]
    tftl-predict model.tflite photo.jpg ... [--top-k 5] [--json]

Also `python -m tftl.runtime.cli train|eval|predict ...`. Exit status: 0 done, 1 training
diverged (NaN/inf loss), 2 bad input (one line on stderr), 130 interrupted (checkpoint saved).
"""

import argparse
import concurrent.futures
import json
import os
import sys

import numpy as np

from tftl.runtime import data
from tftl.runtime import trainer as tr
from tftl.runtime.session import Session


def _error(prog, msg) -> int:
    print(f"{prog}: error: {msg}", file=sys.stderr)
    return tr.EXIT_USAGE


def _run(prog, fn, args) -> int:
    """Call fn(args) -> int, turning expected failures into one stderr line and an exit code."""
    try:
        return fn(args)
    except tr.Interrupted:
        return tr.EXIT_INTERRUPTED
    except KeyboardInterrupt:
        print(f"{prog}: aborted", file=sys.stderr)
        return tr.EXIT_INTERRUPTED
    except tr.Diverged as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return tr.EXIT_DIVERGED
    except (ValueError, RuntimeError) as e:  # TrainError, ModelFileError, CheckpointError, no runtime
        return _error(prog, str(e).splitlines()[0] if str(e) else type(e).__name__)
    except OSError as e:
        where = f" {e.filename}" if e.filename else ""
        return _error(prog, f"cannot access{where}: {e.strerror or e}")


def _parse(parser, argv):
    """parse_args that returns an exit code instead of raising SystemExit (for main(argv))."""
    try:
        return parser.parse_args(argv), None
    except SystemExit as e:
        return None, (e.code if isinstance(e.code, int) else tr.EXIT_USAGE)


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _float(text):
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


# --- tftl-train ---------------------------------------------------------------------------


def train_parser(prog="tftl-train"):
    p = argparse.ArgumentParser(
        prog=prog,
        description="Fine-tune a tftl model on images/ (one subfolder per class) with the TFLite runtime.",
        epilog="Exit status: 0 done, 1 loss diverged, 2 bad input, 130 interrupted (checkpoint saved; "
               "continue with --resume).",
    )
    p.add_argument("model", help="tftl model file (.tflite from python -m converters.export)")
    p.add_argument("images", help="training images: one subfolder per class, folder names become labels")
    v = p.add_mutually_exclusive_group()
    v.add_argument("--val", metavar="DIR", help="validation images (same layout)")
    v.add_argument("--val-split", metavar="F", type=_float, help="hold out this fraction of each class")
    p.add_argument("--epochs", type=_positive_int, default=tr.DEFAULT_EPOCHS, help="default %(default)s")
    p.add_argument("--lr", type=_float, default=tr.DEFAULT_LR,
                   help="peak learning rate (linear warm-up, then cosine decay to 0); default %(default)g")
    p.add_argument("--warmup-steps", type=int, default=None, help="default min(50, total steps / 10)")
    p.add_argument("--batch", type=_positive_int, default=None,
                   help="must equal the model's fixed batch (set at export)")
    p.add_argument("--augment", action=argparse.BooleanOptionalAction, default=True,
                   help="random resized crop + horizontal flip (default on)")
    p.add_argument("--threads", type=_positive_int, default=None, help="interpreter and decode threads")
    p.add_argument("--cache-features", action=argparse.BooleanOptionalAction, default=None,
                   help="run the frozen trunk once per image and reuse its features every epoch "
                        "(default: on when the model has a frozen trunk)")
    p.add_argument("--cache-views", type=_positive_int, default=tr.DEFAULT_CACHE_VIEWS,
                   help="augmented views cached per image, drawn once and never regenerated (a fresh view "
                        "costs a full trunk pass); each epoch uses one per image (default %(default)s)")
    p.add_argument("--cache-ram-mb", type=_float, default=tr.DEFAULT_CACHE_RAM_MB,
                   help="larger caches go to memmap files in the checkpoint folder (default %(default)s)")
    p.add_argument("--checkpoint-dir", default=None, help="default <output>.ckpt/")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint in --checkpoint-dir")
    p.add_argument("--output", default=None, help="fine-tuned model (default <model>_finetuned.tflite)")
    p.add_argument("--history", default=None, metavar="JSON", help="write per-epoch metrics here")
    p.add_argument("--plot", default=None, metavar="PNG", help="plot loss/accuracy curves (needs matplotlib)")
    p.add_argument("--seed", type=int, default=0)
    return p


def train_main(argv=None) -> int:
    args, code = _parse(train_parser(), argv)
    if args is None:
        return code
    cfg = tr.TrainConfig(
        model=args.model, images=args.images, val=args.val, val_split=args.val_split, epochs=args.epochs,
        lr=args.lr, warmup_steps=args.warmup_steps, batch=args.batch, augment=args.augment,
        threads=args.threads, cache_features=args.cache_features, cache_views=args.cache_views,
        cache_ram_mb=args.cache_ram_mb, checkpoint_dir=args.checkpoint_dir, resume=args.resume,
        output=args.output, history=args.history, plot=args.plot, seed=args.seed,
    )
    return _run("tftl-train", lambda cfg: (tr.train(cfg), tr.EXIT_OK)[1], cfg)


# --- tftl-eval ----------------------------------------------------------------------------


def eval_parser(prog="tftl-eval"):
    p = argparse.ArgumentParser(prog=prog, description="Top-1 accuracy of a tftl model on images/ "
                                "(one subfolder per class, named after the model's labels).")
    p.add_argument("model")
    p.add_argument("images")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object: accuracy, n, per_class, confusion, skipped")
    p.add_argument("--threads", type=_positive_int, default=None)
    return p


def _evaluate(args) -> int:
    session = Session(args.model, threads=args.threads)
    session.require("infer", purpose="evaluation")
    try:
        folder = data.ImageFolder(args.images, labels=session.labels)
    except ValueError as e:
        raise tr.TrainError(str(e)) from None
    skipped = {}
    with concurrent.futures.ThreadPoolExecutor(args.threads or os.cpu_count() or 1) as pool:
        probs, labels = tr.predict_samples(session, folder.samples, pool, skipped=skipped)
    if not len(labels):
        raise tr.TrainError(f"none of the {len(folder)} images in {args.images} could be read — check the files")
    result = tr.metrics(probs, labels, session.labels)
    result.pop("loss")
    result["labels"] = session.labels
    result["skipped"] = tr._skipped_list(skipped)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"accuracy {result['accuracy']:.4f}  ({int(round(result['accuracy'] * result['n']))}/{result['n']}"
              f" images, {args.images})")
        width = max(len(name) for name in result["per_class"])
        for name, m in result["per_class"].items():
            print(f"  {name:<{width}}  {m['accuracy']:.4f}  (n={m['n']})")
    if skipped:
        print(f"warning: skipped {len(skipped)} unreadable image(s):", file=sys.stderr)
        for path, reason in sorted(skipped.items()):
            print(f"  {path}: {reason}", file=sys.stderr)
    return tr.EXIT_OK


def eval_main(argv=None) -> int:
    args, code = _parse(eval_parser(), argv)
    return code if args is None else _run("tftl-eval", _evaluate, args)


# --- tftl-predict -------------------------------------------------------------------------


def predict_parser(prog="tftl-predict"):
    p = argparse.ArgumentParser(prog=prog, description="Top-k labels of photos with a tftl model.")
    p.add_argument("model")
    p.add_argument("photos", nargs="+")
    p.add_argument("--top-k", type=_positive_int, default=5)
    p.add_argument("--json", action="store_true", help="print one JSON object: predictions, skipped")
    p.add_argument("--threads", type=_positive_int, default=None)
    return p


def _predict(args) -> int:
    session = Session(args.model, threads=args.threads)
    session.require("infer", purpose="prediction")
    images, paths, skipped = [], [], []
    for path in args.photos:
        try:
            images.append(data.load_image(path, session.image_size))
            paths.append(path)
        except data.ImageError as e:
            skipped.append({"path": path, "reason": e.reason})
        except OSError as e:  # missing file, a folder
            skipped.append({"path": path, "reason": e.strerror or str(e)})
    predictions = []
    if images:
        probs = session.predict(np.stack(images))
        k = min(args.top_k, probs.shape[1])
        for path, p in zip(paths, probs):
            top = np.argsort(-p, kind="stable")[:k]
            predictions.append({"path": path, "top_k": [
                {"label": session.labels[i], "probability": float(p[i])} for i in top]})
    if args.json:
        print(json.dumps({"predictions": predictions, "skipped": skipped}))
    else:
        for pred in predictions:
            print(pred["path"])
            for item in pred["top_k"]:
                print(f"  {100 * item['probability']:6.2f}%  {item['label']}")
    for s in skipped:
        print(f"warning: skipped {s['path']}: {s['reason']}", file=sys.stderr)
    if not predictions:
        raise tr.TrainError("none of the photos could be read")
    return tr.EXIT_OK


def predict_main(argv=None) -> int:
    args, code = _parse(predict_parser(), argv)
    return code if args is None else _run("tftl-predict", _predict, args)


COMMANDS = {"train": train_main, "eval": eval_main, "predict": predict_main}


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] not in COMMANDS:
        print(f"usage: python -m tftl.runtime.cli {{{','.join(COMMANDS)}}} ...", file=sys.stderr)
        return tr.EXIT_USAGE
    return COMMANDS[argv[0]](argv[1:])


if __name__ == "__main__":
    sys.exit(main())

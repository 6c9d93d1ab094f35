"""Accuracy and size cost of the int8 frozen trunk: float vs int8 weights, same training.

    python bench/int8_accuracy.py [--model mbv2] [--seeds 0,1,2] [--epochs 10]

Exports the model once in float, derives the int8 files from that flatbuffer with
`converters.quantize.int8_weights` (the default: every frozen weight; and the same with the
trained weights' initial values rounded to int8 too), trains each with tftl-train on flowers5 for the same seeds and
reports val accuracy (mean, min, max) and file sizes. Writes bench/int8_accuracy.json.
"""

import argparse
import json
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import common  # noqa: E402
import train_cli  # noqa: E402
from converters.quantize import int8_weights  # noqa: E402
from tftl.runtime import modelfile  # noqa: E402

VARIANTS = (("float", None), ("int8 (default)", {}),
            ("int8, initial values too", {"initial_values": True}))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="mbv2", choices=sorted(train_cli.ACC_WEIGHTS))
    p.add_argument("--scheme", default="mobiletl-3")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--json", default=os.path.join(common.BENCH, "int8_accuracy.json"))
    a = p.parse_args(argv)
    weights, tag = train_cli.ACC_WEIGHTS[a.model]
    src = common.source_hash()
    path, _, err = common.ensure_export(a.model, a.scheme, labels=train_cli.flowers_labels(),
                                        weights=weights, weights_tag=tag, quantize="none",
                                        src=src)
    if err:
        sys.exit(err)
    base = modelfile.read_model(path)
    rows = []
    for i, (name, options) in enumerate(VARIANTS):
        vpath = path
        stats = {}
        if options is not None:
            flat, stats = int8_weights(base.flatbuffer, **options)
            vpath = path.replace(".tflite", f"_int8v{i}.tflite")
            meta = {k: v for k, v in base.metadata.items() if k not in ("content_hash", "num_labels")}
            meta["quantize"] = "int8"
            modelfile.write_model(vpath, flat, meta, base.labels)
        accs = []
        for seed in [int(s) for s in a.seeds.split(",")]:
            common.log(f"{name}: tftl-train seed {seed}, {a.epochs} epochs")
            r = train_cli.run_train(vpath, epochs=a.epochs, seed=seed)
            if "error" in r:
                sys.exit(f"{name} seed {seed} failed: {r['error']}")
            accs.append(r["val_accuracy"])
            common.log(f"  val accuracy {r['val_accuracy']:.3f}")
        rows.append(dict(variant=name, options=options, file_bytes=os.path.getsize(vpath),
                         val_accuracy=accs, mean=statistics.mean(accs), **stats))
    print(f"\n{a.model} {a.scheme}, flowers5 val (200 images), {a.epochs} epochs, seeds {a.seeds}")
    print("| weights | file MB | val acc mean | min | max | quantized tensors |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['variant']} | {r['file_bytes'] / 1e6:.2f} | {r['mean']:.3f} | "
              f"{min(r['val_accuracy']):.3f} | {max(r['val_accuracy']):.3f} | "
              f"{r.get('quantized_tensors', 0)} |")
    with open(a.json, "w") as f:
        json.dump(dict(model=a.model, scheme=a.scheme, epochs=a.epochs, source=src,
                       command="python bench/int8_accuracy.py " + " ".join(argv or sys.argv[1:]),
                       rows=rows), f, indent=2)
    print(f"wrote {a.json}")


if __name__ == "__main__":
    main()

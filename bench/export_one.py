"""Export one model in its own process (called by bench/common.py::ensure_export).

    python bench/export_one.py '{"model": ..., "scheme": ..., "output": ...}'
Prints one JSON line: path, size, export seconds, trainable/frozen params.
"""

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def main():
    spec = json.loads(sys.argv[1])
    from converters import export
    t0 = time.time()
    r = export.export(spec["model"], scheme=spec["scheme"], blocks=spec["blocks"],
                      labels=spec["labels"], image_size=spec["image_size"], batch=spec["batch"],
                      weights=spec["weights"], quantize=spec["quantize"], output=spec["output"],
                      log=lambda m: print(m, file=sys.stderr, flush=True))
    print(json.dumps(dict(path=r.path, size_bytes=r.size_bytes, seconds=round(time.time() - t0, 1),
                          trainable_params=r.trainable_params, frozen_params=r.frozen_params)))


if __name__ == "__main__":
    main()

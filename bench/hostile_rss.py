"""Peak RSS of the device readers on hostile inputs (issue 10), one fresh process per case.

    python bench/hostile_rss.py [--code DIR] [--model some.tflite]

--code: the source tree whose `tftl` is imported (default: this checkout), so the same
inputs can be measured against an older commit (`git archive <commit> | tar -x -C DIR`).
--model: an exported tftl model whose flatbuffer carries the hostile archive (the
metadata-bomb case is left out when it does not exist).

Cases:
  metadata-bomb  a model whose tftl.json member is 400 MB of JSON deflated to ~0.4 MB
  png-13000      a ~20 KB 1-bit PNG of 13000 x 13000 pixels (0.5 GB as RGB)
  npz-huge-shape a state.npz member whose .npy header declares 2**40 float32 elements
Prints one line per case: outcome (first 100 characters) and the process's peak RSS.
"""

import argparse
import io
import json
import os
import struct
import subprocess
import sys
import tempfile
import zipfile
import zlib

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CHILD = r"""
import resource, sys
kind, path = sys.argv[1], sys.argv[2]
try:
    if kind == "model":
        from tftl.runtime import modelfile
        modelfile.read_model(path)
        out = "read"
    elif kind == "image":
        from tftl.runtime import data
        data.load_image(path, 224)
        out = "decoded"
    elif kind == "state":
        from tftl.runtime import checkpoint
        checkpoint.load_checkpoint(path)
        out = "loaded"
    else:
        import tftl.runtime.modelfile, tftl.runtime.data, tftl.runtime.checkpoint
        out = "imported"
except BaseException as e:
    out = type(e).__name__ + ": " + " ".join(str(e).split())
# VmHWM (peak resident set) starts afresh at exec, unlike ru_maxrss, which keeps the forking parent's
hwm = [l.split()[1] for l in open("/proc/self/status") if l.startswith("VmHWM")][0]
print(out[:100], "| peak RSS", int(hwm) // 1024, "MB")
"""


def _png(width, height) -> bytes:
    """A black 1-bit grayscale PNG (what makes a 13000^2 image a ~20 KB file)."""
    def chunk(tag, body):
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body))
    comp = zlib.compressobj(9)
    row = b"\0" * ((width + 7) // 8 + 1)
    body = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
            + chunk(b"IDAT", body) + chunk(b"IEND", b""))


def _metadata_bomb(model_path: str) -> bytes:
    with open(model_path, "rb") as f:
        data = f.read()
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        start = min(i.header_offset for i in z.infolist())
        meta = json.loads(z.read("tftl.json"))
        labels = z.read("labels.txt")
    flat = data[:start]
    meta["padding"] = " " * (400 << 20)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        z.writestr("tftl.json", json.dumps(meta))
        z.writestr("labels.txt", labels)
    return flat + buf.getvalue()


def _huge_npy_checkpoint() -> bytes:
    header = "{'descr': '<f4', 'fortran_order': False, 'shape': (1099511627776,), }"
    header += " " * (63 - (len(header) + 10) % 64) + "\n"
    npy = b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode() + b"\0" * 64
    meta = json.dumps({"model_hash": "x", "labels": []}).encode()
    meta_npy = io.BytesIO()
    import numpy as np
    np.lib.format.write_array(meta_npy, np.frombuffer(meta, np.uint8))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("w.npy", npy)
        z.writestr("__meta__.npy", meta_npy.getvalue())
    return buf.getvalue()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--code", default=HERE)
    p.add_argument("--model", default="/work/cache/mbv3s_64_mobiletl2.tflite")
    args = p.parse_args(argv)
    env = dict(os.environ, PYTHONPATH=os.path.abspath(args.code))
    with tempfile.TemporaryDirectory() as tmp:
        cases = [("baseline", "import", "-")]
        if os.path.isfile(args.model):
            bomb = os.path.join(tmp, "bomb.tflite")
            with open(bomb, "wb") as f:
                f.write(_metadata_bomb(args.model))
            cases.append(("metadata-bomb (%.1f MB file)" % (os.path.getsize(bomb) / 2**20), "model", bomb))
        png = os.path.join(tmp, "big.png")
        with open(png, "wb") as f:
            f.write(_png(13000, 13000))
        cases.append(("png-13000 (%.1f KB file)" % (os.path.getsize(png) / 1024), "image", png))
        ck = os.path.join(tmp, "checkpoint.npz")
        with open(ck, "wb") as f:
            f.write(_huge_npy_checkpoint())
        cases.append(("npz-huge-shape", "state", ck))
        for name, kind, path in cases:
            r = subprocess.run([sys.executable, "-c", CHILD, kind, path], env=env, cwd=tmp,
                               capture_output=True, text=True, timeout=600)
            line = (r.stdout.strip() or r.stderr.strip().splitlines()[-1:] or ["(no output)"])
            line = line if isinstance(line, str) else line[0]
            print(f"{name:32s} exit {r.returncode:3d}  {line}")


if __name__ == "__main__":
    main()

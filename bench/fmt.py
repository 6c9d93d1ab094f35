"""Formatting and lookup helpers shared by the report modules (pure Python).

Everything here reads a results.json dict; nothing holds a measurement of its own.
"""

import common

MB = common.MB


def mb(x, nd=1):
    return "—" if x is None else f"{x / MB:.{nd}f}"


def ms(x):
    return "—" if x is None else (f"{x:.0f}" if x >= 10 else f"{x:.1f}")


def step_ms(r):
    """'wall (cpu)' median ms of a probe result, or '—'."""
    if not r or r.get("median_ms") is None:
        return "—"
    cpu = r.get("median_cpu_ms")
    return ms(r["median_ms"]) + (f" ({ms(cpu)})" if cpu is not None else "")


def cpu_ms(r):
    """The step time verdicts use: median process CPU ms at 1 thread (robust to other jobs
    on the shared 2-core machine, which stretch wall time), else median wall ms."""
    return r.get("median_cpu_ms") or r["median_ms"]


def dig(d, *path):
    for p in path:
        if not isinstance(d, dict) or p not in d:
            return None
        d = d[p]
    return d


def is_ok(r):
    return isinstance(r, dict) and "error" not in r


def lite(row, t="1"):
    r = dig(row, "litert", str(t))
    return r if is_ok(r) else None


def tfp(row, t="1"):
    r = dig(row, "tf", str(t))
    return r if is_ok(r) else None


def verdict(ok):
    return "PASS" if ok else "MISS"


def row_of(res, key, section="memory"):
    return (dig(res, section, "rows") or {}).get(key) or {}


def other_bytes(l1):
    inputs = l1.get("rss_inputs", l1["rss_loaded"]) - l1["rss_loaded"]
    return (l1["peak_rss"] - l1["rss_loaded"] - l1["arena"]["extent_bytes"]
            - l1.get("variables_bytes", 0) - inputs)


def op_ms(row, op, field="ms"):
    return dig(row, "op_profile", "by_type", op, field) or 0

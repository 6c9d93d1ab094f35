"""A dependency-free one-line progress bar on stderr.

On a terminal it redraws one line with `\\r`; when stderr is a file or a pipe (adb logs,
CI) it prints a plain line every ~10% and at the end, so logs stay short and readable.
"""

import sys
import time


def _format_duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _format_value(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)


class Progress:
    """Progress over `total` steps: `update(step, loss=..., acc=..., **{"img/s": ...})`.

    Usable as a context manager; `close()` finishes the line. Metrics are shown in the
    order given, formatted with 4 significant digits.
    """

    def __init__(self, total, *, desc="", stream=None, width=24, min_interval=0.1, tty=None):
        """tty: force terminal (True) or log (False) output; None asks the stream."""
        self.total = max(0, int(total))
        self.desc = desc
        self.stream = sys.stderr if stream is None else stream
        self.width = width
        self.min_interval = min_interval
        if tty is None:
            isatty = getattr(self.stream, "isatty", None)
            tty = bool(isatty and isatty())
        self.tty = tty
        self.step = 0
        self.metrics = {}
        self._start = time.monotonic()
        self._last_draw = 0.0
        self._last_decile = -1
        self._line_len = 0
        self._closed = False
        self._drawn = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def update(self, step=None, **metrics) -> None:
        """Advance to `step` (default: one more step) and remember the latest metrics."""
        self.step = self.step + 1 if step is None else int(step)
        self.metrics.update(metrics)
        done = self.total and self.step >= self.total
        if self.tty:
            now = time.monotonic()
            if done or now - self._last_draw >= self.min_interval:
                self._last_draw = now
                self._draw(final=False)
        else:
            decile = (10 * self.step // self.total) if self.total else 0
            if decile > self._last_decile:
                self._last_decile = decile
                self._draw(final=False)

    def close(self) -> None:
        """Print the final state and end the line (idempotent)."""
        if self._closed:
            return
        self._closed = True
        if self.tty or self._drawn != (self.step, tuple(self.metrics.items())):
            self._draw(final=True)

    def line(self) -> str:
        """The text of the progress line for the current state."""
        elapsed = time.monotonic() - self._start
        parts = [self.desc] if self.desc else []
        if self.total:
            frac = min(1.0, self.step / self.total)
            filled = int(frac * self.width)
            bar = "=" * filled + (">" if filled < self.width else "") + " " * (self.width - filled - 1)
            digits = len(str(self.total))
            parts.append(f"{self.step:>{digits}}/{self.total} [{bar}] {100 * frac:3.0f}%")
            if 0 < self.step < self.total:
                eta = elapsed / self.step * (self.total - self.step)
                parts.append(f"ETA {_format_duration(eta)}")
            else:
                parts.append(f"in {_format_duration(elapsed)}")
        else:
            parts.append(f"{self.step} steps in {_format_duration(elapsed)}")
        parts.extend(f"{name} {_format_value(value)}" for name, value in self.metrics.items())
        return "  ".join(parts)

    def _draw(self, final: bool) -> None:
        text = self.line()
        self._drawn = (self.step, tuple(self.metrics.items()))
        if self.tty:
            pad = " " * max(0, self._line_len - len(text))
            self.stream.write("\r" + text + pad + ("\n" if final else ""))
            self._line_len = 0 if final else len(text)
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

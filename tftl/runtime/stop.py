"""Stopping a run at a step boundary: what Ctrl-C, SIGTERM and SIGHUP ask of a trainer.

The app (run.py) installs the flag; the training loop and the feature cache only ask it at each
step (`check`), so the walk of a run never calls back up into the app for it.
"""

import signal
import threading

from tftl.runtime.errors import Abort, Interrupted


class StopFlag:
    """The first SIGINT/SIGTERM/SIGHUP asks to stop at the next step boundary (the trainer
    then saves a checkpoint); a second one aborts at once. Handlers are installed only in
    the main thread and restored on exit."""

    SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))

    def __init__(self, err):
        self.err = err
        self.requested = None
        self._old = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._old = {sig: signal.signal(sig, self._handle) for sig in self.SIGNALS}
        return self

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)

    def _handle(self, signum, frame):
        if self.requested:
            raise Abort()
        self.requested = signal.Signals(signum).name
        self.err.write(f"\n{self.requested}: stopping after this step and saving a checkpoint "
                       "(send it again to abort)\n")
        self.err.flush()

    def check(self):
        if self.requested:
            raise Interrupted()

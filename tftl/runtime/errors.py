"""The runtime's failure kinds and the CLIs' exit codes, shared by the library and the CLIs.

`InputError` means "the user gave something wrong": every reader's own error
(modelfile.ModelFileError, checkpoint.CheckpointError, contract.ContractError,
data.ImageError, interpreter.RuntimeNotFound, ...) subclasses it, so the CLIs catch this one
class, print it as one line and exit 2. Any other exception is a bug and is reported as an
internal error with its traceback (exit 1). This module imports nothing: it is the floor
every other module of the runtime stands on.
"""

EXIT_OK, EXIT_DIVERGED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
EXIT_INTERNAL = 1


class InputError(ValueError):
    """Bad input (images, model, options, paths, checkpoint): one line naming the fix, exit 2."""


class Diverged(RuntimeError):
    """The loss or the weights became NaN or infinite; the last finite checkpoint is kept (exit 1)."""


class Interrupted(Exception):
    """Ctrl-C, SIGTERM or SIGHUP: a checkpoint was saved when there was one to save (exit 130).

    args[0], when present, is the checkpoint path that was written.
    """


class Abort(KeyboardInterrupt):
    """A second interrupt: stop at once without saving."""

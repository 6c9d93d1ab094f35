"""The runtime's failure kinds and the CLIs' exit codes, shared by the library and the CLIs.

Only `InputError` (and the file readers' own ValueError subclasses, see `EXPECTED`) means
"the user gave something wrong": the CLIs print it as one line and exit 2. Any other
exception is a bug and is reported as an internal error with its traceback (exit 1).
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


def expected_errors() -> tuple:
    """The exception types that are user errors (one line, exit 2), imported lazily."""
    from tftl.runtime import checkpoint, contract, data, interpreter, modelfile

    return (InputError, modelfile.ModelFileError, checkpoint.CheckpointError, contract.ContractError,
            data.ImageError, interpreter.RuntimeNotFound)

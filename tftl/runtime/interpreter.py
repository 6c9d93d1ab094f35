"""Pick a TFLite interpreter without TensorFlow: ai_edge_litert, else tflite_runtime.

ai_edge_litert is the maintained package; tflite_runtime remains for older devices
(e.g. 32-bit ARM wheels). TFTL_RUNTIME=ai_edge_litert|tflite_runtime forces one, to
compare them or to work around a broken install.
"""

import ctypes
import ctypes.util
import gc
import importlib
import os
import platform
import sys

from tftl.runtime.errors import InputError

MAX_THREADS = 256  # interpreter threads; --threads 100000 made the runtime crash
RUNTIMES = ("ai_edge_litert", "tflite_runtime")
_PIP_NAMES = {"ai_edge_litert": "ai-edge-litert", "tflite_runtime": "tflite-runtime"}


class RuntimeNotFound(InputError, RuntimeError):
    """No usable TFLite runtime is installed (or TFTL_RUNTIME names a wrong one)."""


def _interpreter_class():
    """(runtime name, Interpreter class), honouring TFTL_RUNTIME."""
    forced = os.environ.get("TFTL_RUNTIME", "").strip()
    if forced:
        if forced not in RUNTIMES:
            choices = ", ".join(RUNTIMES)
            raise RuntimeNotFound(f"TFTL_RUNTIME={forced} is not a TFLite runtime — set it to one of {choices}")
        candidates = (forced,)
    else:
        candidates = RUNTIMES
    for name in candidates:
        try:
            module = importlib.import_module(f"{name}.interpreter")
        except ImportError:
            continue
        return name, module.Interpreter
    if forced:
        raise RuntimeNotFound(f"TFTL_RUNTIME={forced} but {forced} is not installed: pip install {_PIP_NAMES[forced]}")
    raise RuntimeNotFound("no TFLite runtime: pip install ai-edge-litert (or tflite-runtime)")


def runtime_name() -> str:
    """The runtime load_interpreter uses: "ai_edge_litert" or "tflite_runtime"."""
    return _interpreter_class()[0]


def scalar_inputs_crash() -> bool:
    """Whether feeding a 0-d input would crash this process's runtime.

    ai-edge-litert's aarch64 builds (every wheel from 1.4 to 2.3) segfault in
    `InterpreterWrapper::ResizeInputTensor` for a 0-d shape, and the Python SignatureRunner
    resizes every input on every call. tflite-runtime 2.14 and every x86-64 build are safe.
    tftl-3 files have no 0-d input; a tftl-2 file's `learning_rate` is one.
    """
    return platform.machine().lower() in ("aarch64", "arm64") and runtime_name() == "ai_edge_litert"


def load_interpreter(model_content: bytes, threads=None, *, xnnpack=True):
    """An Interpreter over in-memory model bytes (a bare flatbuffer or a whole tftl file).

    threads: CPU threads for the kernels; None lets the runtime decide.
    xnnpack: False runs LiteRT's builtin kernels only (no default delegate). XNNPACK keeps
    its own packed weights and workspaces beside the interpreter's arena: without it a
    training step holds less memory but runs slower (bench/TRAINER_MEMORY.md).
    """
    _, interpreter_class = _interpreter_class()
    options = {}
    if not xnnpack:
        resolvers = importlib.import_module(interpreter_class.__module__).OpResolverType
        options["experimental_op_resolver_type"] = resolvers.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    return interpreter_class(model_content=bytes(model_content), num_threads=threads, **options)


def signature_runner(interp, name: str):
    """The runner for signature `name`, or a ValueError listing the signatures the model has."""
    available = sorted(interp.get_signature_list())
    if name not in available:
        listed = ", ".join(available) if available else "none"
        raise ValueError(
            f"model has no signature {name!r} (it has: {listed}) — export it again with python -m converters.export"
        )
    return interp.get_signature_runner(name)


def release_memory() -> None:
    """Hand freed heap pages back to the OS (glibc malloc_trim); a no-op elsewhere.

    An interpreter's arenas and XNNPACK's packed weights are freed into malloc's free lists
    when the interpreter is deleted, but glibc keeps them mapped (they count in RSS) until
    trimmed. Called after a temporary interpreter is dropped, so the memory is really gone
    before the next phase allocates its own.
    """
    gc.collect()
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim(0)
    except (OSError, AttributeError):  # musl and other libcs have no malloc_trim
        pass

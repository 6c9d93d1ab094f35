"""tftl: memory-efficient on-device transfer learning (MobileTL, TinyTL) for Keras + LiteRT.

Pipeline, one module per stage: build (`tftl.build_model`) -> profile (`tftl.profile`) ->
convert (`tftl.export`) -> run on device (`tftl.Session`, `tftl.Trainer`).

    import tftl
    model = tftl.build_model("mbv2", num_classes=5, scheme="mobiletl", blocks=3)   # Keras
    tftl.export("mbv2", scheme="mobiletl", blocks=3, labels=[...], output="m.tflite")
    s = tftl.Session("m.tflite")                                              # no TensorFlow
    tftl.Trainer(s).fit("photos/", epochs=1)

Importing `tftl` loads no TensorFlow: each name below is imported on first use (PEP 562),
and is the real object (its own signature and docstring), not a wrapper.
"""

import importlib

from tftl.archs import MODEL_NAMES
from tftl.schemes import SCHEMES

__version__ = "0.1.0"

# name -> (module, attribute): resolved on first access.
_LAZY = {
    "build_model": ("tftl.models", "build_model"),
    "fit": ("tftl.training", "fit"),  # the Keras reference trainer
    "export": ("converters.export", "export"),
    "Session": ("tftl.runtime.session", "Session"),
    "Trainer": ("tftl.runtime.loop", "Trainer"),
    "Schedule": ("tftl.runtime.loop", "Schedule"),
}
# `profile` is the submodule tftl.profile, which is also callable as its profile() function.
__all__ = ["MODEL_NAMES", "SCHEMES", "__version__", "profile", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value  # later lookups skip __getattr__
        return value
    try:  # submodules (tftl.models, ...) as attributes, as a plain package gives them
        return importlib.import_module(f"{__name__}.{name}")
    except ModuleNotFoundError as e:
        if e.name != f"{__name__}.{name}":
            raise
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))

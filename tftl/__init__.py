"""tftl: memory-efficient on-device transfer learning (MobileTL, TinyTL) for Keras + LiteRT.

Pipeline, one module per stage: build (`tftl.models`) -> profile (`tftl.profile`) ->
convert (`converters.export`) -> run on device (`tftl.runtime`).
Importing `tftl` itself loads no TensorFlow; `build_model` and `fit` import it on use.
"""

from tftl.archs import MODEL_NAMES
from tftl.schemes import SCHEMES

__version__ = "0.1.0"


def build_model(*args, **kwargs):
    """See `tftl.models.build_model`."""
    from tftl import models
    return models.build_model(*args, **kwargs)


def fit(*args, **kwargs):
    """See `tftl.training.fit` (Keras reference trainer)."""
    from tftl import training
    return training.fit(*args, **kwargs)


def shared_dir():
    """The project's reference data folder: $TFTL_SHARED or <repo>/../shared."""
    import os
    return os.environ.get("TFTL_SHARED") or os.path.join(
        os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared")

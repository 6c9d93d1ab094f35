import os

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.environ.get("TFTL_SHARED") or os.path.join(REPO, "..", "shared")
FLOWERS = os.path.join(SHARED, "data", "flowers5")
MBV2_WEIGHTS = os.path.join(SHARED, "weights",
                            "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5")
IMAGENET_SAMPLES = os.path.join(SHARED, "data", "imagenet_samples")


def need(path):
    if not os.path.exists(path):
        pytest.skip(f"{path} not found (set TFTL_SHARED to the shared/ folder)")
    return path


@pytest.fixture(autouse=True)
def _release_tf_memory(request):
    """Exports and Keras models pile up in one pytest process (~0.7 GB per conversion):
    drop Keras' global state and collect after every test that builds models."""
    yield
    if request.module.__name__.rsplit(".", 1)[-1] not in ("test_export", "test_models"):
        return
    import gc
    import sys
    if "keras" in sys.modules:
        sys.modules["keras"].backend.clear_session()
    gc.collect()

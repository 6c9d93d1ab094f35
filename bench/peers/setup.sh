#!/usr/bin/env bash
# The peers' own environment (not a product dependency): PyTorch (PyPI's default wheel, which
# runs on the CPU), ONNX Runtime training 1.19.2 (its last release; numpy<2) and the onnx
# version whose IR (10) it reads.
set -euo pipefail
cd "$(dirname "$0")"
python3 -m venv .venv
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q "numpy<2" torch "onnx==1.16.2" "onnxruntime-training==1.19.2"
echo "peers ready: $(pwd)/.venv/bin/python"

"""Export a file of the previous format, tftl-2, whose `learning_rate` input is a scalar.

    python tests/legacy_export.py <python -m converters.export arguments>

The crash that format tftl-3 removes needs a real 0-d input in a real graph, so this runs
the current exporter with the tftl-2 learning-rate spec (f32[]) and format "tftl-2". The
step reshapes its learning rate to a scalar either way, so the two files train identically; the one difference left is `loss`, f32[1] here where tftl-2 had f32[], which
every reader takes through `contract.first`. Used by tests/test_contract.py and the arm64
smoke run (tests/arm64/smoke.py), to check that old files are read where that is safe and
refused with one line where it is not.
"""

import sys


def main(argv=None):
    import tensorflow as tf

    from converters import export
    from tftl.runtime import contract

    current = export._input_specs

    def tftl2_specs(*args):
        *rest, _ = current(*args)
        return (*rest, tf.TensorSpec([], tf.float32, name=contract.LEARNING_RATE))

    export._input_specs = tftl2_specs
    contract.FORMAT = "tftl-2"  # what export._metadata writes into tftl.json
    return export.main(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

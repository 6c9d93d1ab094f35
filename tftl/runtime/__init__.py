"""Device side of tftl: data, checkpoints, model files and the TFLite interpreter.

Imports no TensorFlow (only numpy, Pillow, the standard library and ai_edge_litert or
tflite_runtime) so it runs on a phone-class device. Submodules are imported on demand;
this package file stays empty so `import tftl.runtime` costs nothing.
"""

"""Signature runners on LiteRT's CompiledModel API, the interface of LiteRT's C API, its
Kotlin/Java CompiledModel and LiteRT.js.

    runner = CompiledRunner(flatbuffer, threads=1)
    out = runner.run("train_features", features=f, labels=y, sample_weight=w, learning_rate=lr)

Same calling convention as `Interpreter.get_signature_runner(name)(**inputs)`: named numpy
inputs in, a dict of named numpy outputs out. The Interpreter stays the default backend
(`tftl.runtime.interpreter`); this one exists so that the model-file contract is tested
through the API the other front ends use (scalar READ_VARIABLE outputs and empty input
maps, which the Interpreter tolerates, fail there). Input and output buffers are created
once per signature and reused, as an app would.
"""

import numpy as np

def available() -> bool:
    """Whether ai_edge_litert's CompiledModel can be imported here."""
    try:
        from ai_edge_litert import compiled_model  # noqa: F401
    except ImportError:
        return False
    return True


class CompiledRunner:
    """Run a model's signatures through `ai_edge_litert.compiled_model.CompiledModel` (CPU)."""

    def __init__(self, flatbuffer: bytes, threads: int = 1):
        from ai_edge_litert import compiled_model as cm
        options = cm.Options(hardware_accelerators=cm.HardwareAccelerator.CPU,
                             cpu_options=cm.CpuOptions(num_threads=int(threads)))
        self.model = cm.CompiledModel.from_buffer(bytes(flatbuffer), options=options)
        self.signatures = self.model.get_signature_list()
        self._buffers = {}

    def _io(self, name):
        if name not in self._buffers:
            if name not in self.signatures:
                raise ValueError(f"model has no signature {name!r} (it has: {', '.join(sorted(self.signatures))})")
            ins = {k: self.model.create_input_buffer_by_name(name, k) for k in self.signatures[name]["inputs"]}
            outs = {k: self.model.create_output_buffer_by_name(name, k) for k in self.signatures[name]["outputs"]}
            # (shape, dtype) of each output, decoded once per signature, not on every run
            specs = {k: (tuple(int(n) for n in d["shape"]), np.dtype(d["dtype"]))
                     for k, d in self.model.get_output_tensor_details(name).items()}
            self._buffers[name] = (ins, outs, specs)
        return self._buffers[name]

    def run(self, name: str, **inputs) -> dict:
        """Run signature `name` on named numpy inputs; returns named numpy outputs (copies)."""
        ins, outs, specs = self._io(name)
        missing = sorted(set(ins) - set(inputs))
        extra = sorted(set(inputs) - set(ins))
        if missing or extra:
            raise ValueError(f"signature {name}: missing inputs {missing}, unknown inputs {extra}")
        for key, buf in ins.items():
            buf.write(np.ascontiguousarray(inputs[key]))
        self.model.run_by_name(name, ins, outs)
        result = {}
        for key, buf in outs.items():
            shape, dtype = specs[key]
            result[key] = np.array(buf.read(int(np.prod(shape)), dtype)).reshape(shape)
        return result

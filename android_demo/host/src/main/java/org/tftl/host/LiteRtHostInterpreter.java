package org.tftl.host;

import com.sun.jna.Function;
import com.sun.jna.Memory;
import com.sun.jna.Native;
import com.sun.jna.NativeLibrary;
import com.sun.jna.Pointer;
import com.sun.jna.ptr.LongByReference;
import com.sun.jna.ptr.PointerByReference;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.tftl.core.SignatureInterpreter;

/**
 * {@link SignatureInterpreter} on the JVM: LiteRT's CompiledModel C API in libLiteRt.so (the one
 * inside the ai-edge-litert wheel), called through JNA. CPU only, with a thread count, as the app
 * runs it. Input and output buffers are created once per signature and reused, as an app would.
 *
 * <p>Mirrors Android's Interpreter input rules: a null or empty input map is refused with the
 * message of NativeInterpreterWrapper.runSignature; an unknown or missing input name, or a buffer
 * of the wrong size, is an IllegalArgumentException naming the signature and tensor.
 */
public final class LiteRtHostInterpreter implements SignatureInterpreter {
  private final LiteRtC c;
  private final Pointer env;
  private final Memory modelBytes;
  private final Pointer model;
  private final Pointer options;
  private final Pointer compiled;
  private final Map<String, Sig> signatures = new LinkedHashMap<>();
  private boolean closed;

  /** One tensor of a signature: its name, ranked type (opaque bytes), shape and buffer. */
  private static final class Io {
    final String name;
    final Memory type = new Memory(LiteRtC.RANKED_TENSOR_TYPE_SIZE);
    int[] shape;
    long bytes;
    Pointer buffer;

    Io(String name) {
      this.name = name;
    }
  }

  private static final class Sig {
    final long index;
    final List<Io> inputs = new ArrayList<>();
    final List<Io> outputs = new ArrayList<>();
    boolean buffersReady;

    Sig(long index) {
      this.index = index;
    }
  }

  /**
   * dlopen flags RTLD_LAZY | RTLD_GLOBAL | RTLD_NODELETE: JNA closes a library whose proxies were
   * collected, and libLiteRt.so registers exit handlers; unmapped, they crash the JVM's exit.
   */
  private static final java.util.Map<String, Object> OPEN_FLAGS =
      java.util.Collections.<String, Object>singletonMap(com.sun.jna.Library.OPTION_OPEN_FLAGS, 0x1 | 0x100 | 0x1000);

  /**
   * Loads a TFLite flatbuffer.
   *
   * @param libraryPath libLiteRt.so (the ai-edge-litert wheel's)
   * @param flatbuffer the model bytes (a tftl file's flatbuffer part, or the whole file)
   * @param threads CPU threads (0: the runtime decides)
   * @throws IllegalStateException when the library cannot load or compile the model
   */
  public LiteRtHostInterpreter(String libraryPath, byte[] flatbuffer, int threads) {
    c = Native.load(libraryPath, LiteRtC.class, OPEN_FLAGS);
    PointerByReference ref = new PointerByReference();
    check(c.LiteRtCreateEnvironment(0, null, ref), "LiteRtCreateEnvironment");
    env = ref.getValue();
    modelBytes = new Memory(flatbuffer.length);
    modelBytes.write(0, flatbuffer, 0, flatbuffer.length);
    check(c.LiteRtCreateModelFromBuffer(env, modelBytes, flatbuffer.length, ref), "LiteRtCreateModelFromBuffer");
    model = ref.getValue();
    check(c.LiteRtCreateOptions(ref), "LiteRtCreateOptions");
    options = ref.getValue();
    check(c.LiteRtSetOptionsHardwareAccelerators(options, LiteRtC.HW_ACCELERATOR_CPU), "set accelerators");
    addCpuThreads(threads);
    check(c.LiteRtCreateCompiledModel(env, model, options, ref), "LiteRtCreateCompiledModel");
    compiled = ref.getValue();
    readSignatures();
  }

  /** CPU options are opaque options "xnnpack" whose payload is TOML text, freed by free(). */
  private void addCpuThreads(int threads) {
    if (threads <= 0) {
      return;
    }
    byte[] toml = ("num_threads = " + threads + "\n").getBytes(StandardCharsets.US_ASCII);
    Pointer payload = new Pointer(Native.malloc(toml.length + 1));
    payload.write(0, toml, 0, toml.length);
    payload.setByte(toml.length, (byte) 0);
    Function free = NativeLibrary.getInstance("c").getFunction("free");
    PointerByReference opaque = new PointerByReference();
    check(c.LiteRtCreateOpaqueOptions("xnnpack", payload, free, opaque), "LiteRtCreateOpaqueOptions");
    check(c.LiteRtAddOpaqueOptions(options, opaque.getValue()), "LiteRtAddOpaqueOptions");
  }

  private void readSignatures() {
    LongByReference n = new LongByReference();
    check(c.LiteRtGetNumModelSignatures(model, n), "LiteRtGetNumModelSignatures");
    PointerByReference ref = new PointerByReference();
    for (long s = 0; s < n.getValue(); s++) {
      check(c.LiteRtGetModelSignature(model, s, ref), "LiteRtGetModelSignature");
      Pointer sig = ref.getValue();
      check(c.LiteRtGetSignatureKey(sig, ref), "LiteRtGetSignatureKey");
      String key = ref.getValue().getString(0);
      Sig info = new Sig(s);
      LongByReference count = new LongByReference();
      check(c.LiteRtGetNumSignatureInputs(sig, count), "LiteRtGetNumSignatureInputs");
      for (long i = 0; i < count.getValue(); i++) {
        check(c.LiteRtGetSignatureInputName(sig, i, ref), "LiteRtGetSignatureInputName");
        Io io = new Io(ref.getValue().getString(0));
        check(c.LiteRtGetSignatureInputTensorByIndex(sig, i, ref), "LiteRtGetSignatureInputTensorByIndex");
        readType(ref.getValue(), io);
        info.inputs.add(io);
      }
      check(c.LiteRtGetNumSignatureOutputs(sig, count), "LiteRtGetNumSignatureOutputs");
      for (long i = 0; i < count.getValue(); i++) {
        check(c.LiteRtGetSignatureOutputName(sig, i, ref), "LiteRtGetSignatureOutputName");
        Io io = new Io(ref.getValue().getString(0));
        check(c.LiteRtGetSignatureOutputTensorByIndex(sig, i, ref), "LiteRtGetSignatureOutputTensorByIndex");
        readType(ref.getValue(), io);
        info.outputs.add(io);
      }
      signatures.put(key, info);
    }
  }

  /** LiteRtRankedTensorType: int32 element type; layout: rank in the low 7 bits, int32 dims[8]. */
  private void readType(Pointer tensor, Io io) {
    check(c.LiteRtGetRankedTensorType(tensor, io.type), "LiteRtGetRankedTensorType of " + io.name);
    int element = io.type.getInt(0);
    int rank = io.type.getInt(4) & 0x7f;
    io.shape = new int[rank];
    long elements = 1;
    for (int d = 0; d < rank; d++) {
      io.shape[d] = io.type.getInt(8 + 4L * d);
      elements *= Math.max(io.shape[d], 0);
    }
    if (element != LiteRtC.ELEMENT_FLOAT32 && element != LiteRtC.ELEMENT_INT32) {
      throw new IllegalStateException("tensor " + io.name + " has element type " + element
          + "; the host backend handles float32 and int32 signature tensors");
    }
    io.bytes = elements * 4;
  }

  private void createBuffers(Sig sig) {
    PointerByReference ref = new PointerByReference();
    LongByReference size = new LongByReference();
    for (int pass = 0; pass < 2; pass++) {
      List<Io> list = pass == 0 ? sig.inputs : sig.outputs;
      for (int i = 0; i < list.size(); i++) {
        Io io = list.get(i);
        int status = pass == 0
            ? c.LiteRtGetCompiledModelInputBufferRequirements(compiled, sig.index, i, ref)
            : c.LiteRtGetCompiledModelOutputBufferRequirements(compiled, sig.index, i, ref);
        check(status, "buffer requirements of " + io.name);
        Pointer requirements = ref.getValue();
        check(c.LiteRtGetTensorBufferRequirementsBufferSize(requirements, size), "buffer size of " + io.name);
        if (size.getValue() < io.bytes) {
          throw new IllegalStateException("buffer of " + io.name + " is " + size.getValue() + " bytes, needs " + io.bytes);
        }
        check(c.LiteRtCreateManagedTensorBufferFromRequirements(env, io.type, requirements, ref),
            "LiteRtCreateManagedTensorBufferFromRequirements for " + io.name);
        io.buffer = ref.getValue();
      }
    }
    sig.buffersReady = true;
  }

  private Sig sig(String key) {
    ensureOpen();
    Sig sig = signatures.get(key);
    if (sig == null) {
      throw new IllegalArgumentException("Input error: Signature " + key + " is not valid (the model has "
          + String.join(", ", signatures.keySet()) + ").");
    }
    return sig;
  }

  private static String[] names(List<Io> list) {
    return list.stream().map(io -> io.name).toArray(String[]::new);
  }

  private static Io find(List<Io> list, String name, String what, String key) {
    for (Io io : list) {
      if (io.name.equals(name)) {
        return io;
      }
    }
    throw new IllegalArgumentException("Invalid " + what + " tensor name " + name + " for signature " + key
        + " (it has " + String.join(", ", names(list)) + ")");
  }

  @Override
  public String[] getSignatureKeys() {
    ensureOpen();
    return signatures.keySet().toArray(new String[0]);
  }

  @Override
  public String[] getSignatureInputs(String signatureKey) {
    return names(sig(signatureKey).inputs);
  }

  @Override
  public String[] getSignatureOutputs(String signatureKey) {
    return names(sig(signatureKey).outputs);
  }

  @Override
  public int[] getInputShape(String signatureKey, String inputName) {
    Sig sig = sig(signatureKey);
    return find(sig.inputs, inputName, "input", signatureKey).shape.clone();
  }

  @Override
  public int[] getOutputShape(String signatureKey, String outputName) {
    Sig sig = sig(signatureKey);
    return find(sig.outputs, outputName, "output", signatureKey).shape.clone();
  }

  @Override
  public void runSignature(Map<String, Object> inputs, Map<String, Object> outputs, String signatureKey) {
    if (inputs == null || inputs.isEmpty()) {
      throw new IllegalArgumentException("Input error: Inputs should not be null or empty.");
    }
    Sig sig = sig(signatureKey);
    for (String name : inputs.keySet()) {
      find(sig.inputs, name, "input", signatureKey);
    }
    if (inputs.size() != sig.inputs.size()) {
      List<String> missing = new ArrayList<>(Arrays.asList(names(sig.inputs)));
      missing.removeAll(inputs.keySet());
      throw new IllegalArgumentException("signature " + signatureKey + ": missing inputs " + missing);
    }
    Map<String, Object> outs = outputs == null ? Collections.emptyMap() : outputs;
    for (String name : outs.keySet()) {
      find(sig.outputs, name, "output", signatureKey);
    }
    if (!sig.buffersReady) {
      createBuffers(sig);
    }
    Pointer[] in = new Pointer[sig.inputs.size()];
    for (int i = 0; i < in.length; i++) {
      Io io = sig.inputs.get(i);
      copyIn(io, asBuffer(inputs.get(io.name), io, signatureKey));
      in[i] = io.buffer;
    }
    Pointer[] out = new Pointer[sig.outputs.size()];
    for (int i = 0; i < out.length; i++) {
      out[i] = sig.outputs.get(i).buffer;
    }
    check(c.LiteRtRunCompiledModel(compiled, sig.index, in.length, in, out.length, out),
        "LiteRtRunCompiledModel(" + signatureKey + ")");
    for (Io io : sig.outputs) {
      if (outs.containsKey(io.name)) {
        copyOut(io, asBuffer(outs.get(io.name), io, signatureKey));
      }
    }
  }

  private static ByteBuffer asBuffer(Object value, Io io, String key) {
    if (!(value instanceof ByteBuffer)) {
      throw new IllegalArgumentException("signature " + key + " tensor " + io.name
          + ": pass a direct ByteBuffer in native order, got " + (value == null ? "null" : value.getClass().getName()));
    }
    ByteBuffer buffer = (ByteBuffer) value;
    if (buffer.capacity() != io.bytes) {
      throw new IllegalArgumentException("Cannot copy between a TensorFlowLite tensor with shape "
          + Arrays.toString(io.shape) + " (" + io.bytes + " bytes) and a buffer of " + buffer.capacity()
          + " bytes (signature " + key + ", tensor " + io.name + ")");
    }
    return buffer;
  }

  private void copyIn(Io io, ByteBuffer src) {
    PointerByReference addr = new PointerByReference();
    check(c.LiteRtLockTensorBuffer(io.buffer, addr, LiteRtC.LOCK_WRITE), "lock " + io.name);
    try {
      ByteBuffer dst = addr.getValue().getByteBuffer(0, io.bytes);
      ByteBuffer s = src.duplicate();
      s.clear();
      dst.put(s);
    } finally {
      c.LiteRtUnlockTensorBuffer(io.buffer);
    }
  }

  private void copyOut(Io io, ByteBuffer dst) {
    PointerByReference addr = new PointerByReference();
    check(c.LiteRtLockTensorBuffer(io.buffer, addr, LiteRtC.LOCK_READ), "lock " + io.name);
    try {
      ByteBuffer d = dst.duplicate();
      d.clear();
      d.put(addr.getValue().getByteBuffer(0, io.bytes));
    } finally {
      c.LiteRtUnlockTensorBuffer(io.buffer);
    }
  }

  private void ensureOpen() {
    if (closed) {
      throw new IllegalStateException("Internal error: The Interpreter has already been closed.");
    }
  }

  private static void check(int status, String what) {
    if (status != LiteRtC.STATUS_OK) {
      throw new IllegalStateException(what + " failed with LiteRtStatus " + status);
    }
  }

  @Override
  public void close() {
    if (closed) {
      return;
    }
    closed = true;
    for (Sig sig : signatures.values()) {
      for (List<Io> list : List.of(sig.inputs, sig.outputs)) {
        for (Io io : list) {
          if (io.buffer != null) {
            c.LiteRtDestroyTensorBuffer(io.buffer);
          }
        }
      }
    }
    c.LiteRtDestroyCompiledModel(compiled);
    c.LiteRtDestroyOptions(options);
    c.LiteRtDestroyModel(model);
    c.LiteRtDestroyEnvironment(env);
    modelBytes.close();
  }
}

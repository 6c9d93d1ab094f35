package org.tftl.app;

import java.io.File;
import java.io.FileInputStream;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.util.Map;
import org.tensorflow.lite.Interpreter;
import org.tftl.core.SignatureInterpreter;
import org.tftl.core.TftlException;

/**
 * The core's {@link SignatureInterpreter} on Android: LiteRT's {@code org.tensorflow.lite.Interpreter}
 * (artifact com.google.ai.edge.litert:litert, which keeps that package), CPU with a thread count.
 */
public final class LiteRtInterpreter implements SignatureInterpreter {
  private final Interpreter interpreter;
  private final ByteBuffer model;  // the Interpreter reads the model from this mapping for its lifetime

  /**
   * Maps the first {@code flatbufferLength} bytes of the stored model file (the flatbuffer; the
   * ZIP with tftl.json follows it) read-only: the pages come from the file, not from the heap.
   */
  public LiteRtInterpreter(File stored, int flatbufferLength, int threads) {
    try (FileInputStream in = new FileInputStream(stored); FileChannel channel = in.getChannel()) {
      model = channel.map(FileChannel.MapMode.READ_ONLY, 0, flatbufferLength);
    } catch (IOException e) {
      throw new TftlException("cannot map " + stored + " (" + e.getMessage() + ")");
    }
    Interpreter.Options options = new Interpreter.Options().setNumThreads(threads);
    interpreter = new Interpreter(model, options);
  }

  @Override
  public String[] getSignatureKeys() {
    return interpreter.getSignatureKeys();
  }

  @Override
  public String[] getSignatureInputs(String signatureKey) {
    return interpreter.getSignatureInputs(signatureKey);
  }

  @Override
  public String[] getSignatureOutputs(String signatureKey) {
    return interpreter.getSignatureOutputs(signatureKey);
  }

  @Override
  public int[] getInputShape(String signatureKey, String inputName) {
    return interpreter.getInputTensorFromSignature(inputName, signatureKey).shape();
  }

  @Override
  public int[] getOutputShape(String signatureKey, String outputName) {
    return interpreter.getOutputTensorFromSignature(outputName, signatureKey).shape();
  }

  @Override
  public void runSignature(Map<String, Object> inputs, Map<String, Object> outputs, String signatureKey) {
    interpreter.runSignature(inputs, outputs, signatureKey);
  }

  @Override
  public void close() {
    interpreter.close();
  }
}

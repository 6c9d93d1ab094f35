package org.tftl.app;

import java.nio.ByteBuffer;
import java.util.Map;
import org.tensorflow.lite.Interpreter;
import org.tftl.core.SignatureInterpreter;

/**
 * The core's {@link SignatureInterpreter} on Android: LiteRT's {@code org.tensorflow.lite.Interpreter}
 * (artifact com.google.ai.edge.litert:litert, which keeps that package), CPU with a thread count.
 */
public final class LiteRtInterpreter implements SignatureInterpreter {
  private final Interpreter interpreter;
  private final ByteBuffer model;  // the Interpreter reads the model from this buffer for its lifetime

  public LiteRtInterpreter(byte[] flatbuffer, int threads) {
    model = ByteBuffer.allocateDirect(flatbuffer.length).order(java.nio.ByteOrder.nativeOrder());
    model.put(flatbuffer);
    ((java.nio.Buffer) model).rewind();
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

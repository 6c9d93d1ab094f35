package org.tftl.core;

import java.util.Map;

/**
 * The part of LiteRT's Java {@code org.tensorflow.lite.Interpreter} that the core uses: named
 * signatures run on named buffers. Every method has the name and meaning of the Interpreter method
 * it stands for, so on Android the adapter is one delegating line each (app module,
 * {@code LiteRtInterpreter}); on the JVM the host backend drives libLiteRt.so's CompiledModel C API.
 *
 * <p>Buffers are direct {@link java.nio.ByteBuffer}s in native byte order, which both runtimes
 * read and write without a copy. As on Android, an empty or null input map is refused with
 * "Inputs should not be null or empty".
 */
public interface SignatureInterpreter extends AutoCloseable {

  /** Interpreter.getSignatureKeys(). */
  String[] getSignatureKeys();

  /** Interpreter.getSignatureInputs(signatureKey). */
  String[] getSignatureInputs(String signatureKey);

  /** Interpreter.getSignatureOutputs(signatureKey). */
  String[] getSignatureOutputs(String signatureKey);

  /** Interpreter.getInputTensorFromSignature(inputName, signatureKey).shape(). */
  int[] getInputShape(String signatureKey, String inputName);

  /** Interpreter.getOutputTensorFromSignature(outputName, signatureKey).shape(). */
  int[] getOutputShape(String signatureKey, String outputName);

  /** Interpreter.runSignature(inputs, outputs, signatureKey). */
  void runSignature(Map<String, Object> inputs, Map<String, Object> outputs, String signatureKey);

  @Override
  void close();
}

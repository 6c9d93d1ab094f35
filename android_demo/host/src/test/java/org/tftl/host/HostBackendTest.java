package org.tftl.host;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.Arrays;
import java.util.HashMap;
import java.util.Map;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.tftl.core.ModelFile;
import org.tftl.core.SignatureInterpreter;

/** The JNA backend over libLiteRt.so behaves like Android's Interpreter on the tftl-3 contract. */
class HostBackendTest {
  @BeforeAll
  static void need() {
    Work.require();
  }

  private static SignatureInterpreter interpreter() throws Exception {
    ModelFile mf = ModelFile.read(Work.file("model.tflite"));
    return new LiteRtHostInterpreter(Work.LIB, mf.flatbuffer(), 1);
  }

  @Test
  void signaturesAndShapesAreTheContracts() throws Exception {
    try (SignatureInterpreter it = interpreter()) {
      assertEquals(Arrays.asList("embed_features", "extract", "extract_micro", "infer", "infer_features", "restore", "save", "train", "train_features"),
          Arrays.stream(it.getSignatureKeys()).sorted().collect(java.util.stream.Collectors.toList()));
      assertArrayEquals(new int[] {8, 96, 96, 3}, it.getInputShape("infer", "images"));
      assertArrayEquals(new int[] {8, 5}, it.getOutputShape("infer", "probabilities"));
      assertArrayEquals(new int[] {1}, it.getInputShape("save", "token"));
      assertArrayEquals(new int[] {1}, it.getOutputShape("save", "opt_step"));
      assertArrayEquals(new String[] {"ok"}, it.getSignatureOutputs("restore"));
    }
  }

  @Test
  void emptyInputMapIsRefusedAsOnAndroid() throws Exception {
    try (SignatureInterpreter it = interpreter()) {
      IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
          () -> it.runSignature(new HashMap<>(), new HashMap<>(), "save"));
      assertTrue(e.getMessage().contains("Inputs should not be null or empty"), e.getMessage());
      assertThrows(IllegalArgumentException.class, () -> it.runSignature(null, new HashMap<>(), "save"));
    }
  }

  @Test
  void saveRunsRepeatedlyAndUnknownNamesAreRefused() throws Exception {
    try (SignatureInterpreter it = interpreter()) {
      ByteBuffer token = ByteBuffer.allocateDirect(4).order(ByteOrder.nativeOrder());
      Map<String, Object> in = Map.of("token", token);
      ByteBuffer step = ByteBuffer.allocateDirect(4).order(ByteOrder.nativeOrder());
      ByteBuffer bias = ByteBuffer.allocateDirect(5 * 4).order(ByteOrder.nativeOrder());
      for (int i = 0; i < 3; i++) {
        step.putFloat(0, -1f);
        it.runSignature(in, Map.of("opt_step", step, "predictions__bias", bias), "save");
        assertEquals(0f, step.getFloat(0));
      }
      assertThrows(IllegalArgumentException.class, () -> it.runSignature(Map.of("nope", token), Map.of(), "save"));
      assertThrows(IllegalArgumentException.class, () -> it.runSignature(in, Map.of(), "no_such_signature"));
      ByteBuffer wrong = ByteBuffer.allocateDirect(8).order(ByteOrder.nativeOrder());
      assertThrows(IllegalArgumentException.class, () -> it.runSignature(Map.of("token", wrong), Map.of(), "save"));
    }
  }
}

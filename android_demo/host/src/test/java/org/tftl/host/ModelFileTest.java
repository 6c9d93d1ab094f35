package org.tftl.host;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.google.gson.JsonArray;
import com.google.gson.JsonElement;
import com.google.gson.JsonParser;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.util.ArrayList;
import java.util.List;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.tftl.core.ModelFile;
import org.tftl.core.TftlException;

/** The model-file reader: metadata, labels, content hash, and one-line refusals. */
class ModelFileTest {
  @BeforeAll
  static void need() {
    Work.require();
  }

  @Test
  void readsTheExportedModel() throws Exception {
    ModelFile mf = ModelFile.read(Work.file("model.tflite"));
    assertEquals(Work.LABELS, mf.labels);
    assertEquals(96, mf.meta.imageSize);
    assertEquals(8, mf.meta.batch);
    assertEquals(5, mf.meta.numLabels);
    assertTrue(mf.meta.hasTrunk());
    assertFalse(mf.meta.trainedState);
    assertNull(mf.stateNpz);
    assertEquals(mf.meta.contentHash, mf.modelHash());
    assertEquals(mf.meta.stateNames.size(), mf.meta.stateGroups.values().stream().mapToInt(java.util.List::size).sum());
    ModelFile ft = ModelFile.read(Work.file("py_ft.tflite"));
    assertNotNull(ft.stateNpz);
    assertTrue(ft.meta.trainedState);
    assertTrue(ft.modelHash().startsWith(ft.meta.contentHash + "+"));
  }

  /**
   * labels.txt splits and the label rule applies as the contract says: the same labels or a one-line
   * refusal for every text of contract/vectors/labels.json (Python's verdicts).
   */
  @Test
  void labelsTxtReadsAsPythonDoes() throws Exception {
    String json = new String(Files.readAllBytes(Work.file("label_vectors.json").toPath()), StandardCharsets.UTF_8);
    JsonArray cases = JsonParser.parseString(json).getAsJsonObject().getAsJsonArray("cases");
    assertTrue(cases.size() >= 20);
    for (JsonElement c : cases) {
      String text = c.getAsJsonObject().get("text").getAsString();
      JsonElement want = c.getAsJsonObject().get("labels");
      if (want.isJsonNull()) {
        TftlException e = assertThrows(TftlException.class, () -> ModelFile.parseLabels(text), text);
        assertEquals(1, e.getMessage().split("\\R", -1).length, e.getMessage());
      } else {
        List<String> expected = new ArrayList<>();
        want.getAsJsonArray().forEach(l -> expected.add(l.getAsString()));
        assertEquals(expected, ModelFile.parseLabels(text), text);
      }
    }
  }

  @Test
  void refusesTftl1WithAReExportMessage() {
    TftlException e = assertThrows(TftlException.class, () -> ModelFile.read(Work.file("v1.tflite")));
    assertTrue(e.getMessage().contains("tftl-1") && e.getMessage().contains("export it again"), e.getMessage());
    assertFalse(e.getMessage().contains("\n"));
  }

  @Test
  void refusesEditedTruncatedAndForeignFiles() throws Exception {
    byte[] data = Files.readAllBytes(Work.file("model.tflite").toPath());
    byte[] edited = data.clone();
    edited[1000] ^= 1;
    TftlException e = assertThrows(TftlException.class, () -> ModelFile.parse(edited, "model file x.tflite"));
    assertTrue(e.getMessage().startsWith("model file x.tflite is truncated or corrupted"), e.getMessage());
    byte[] cut = java.util.Arrays.copyOf(data, data.length - 100);
    assertThrows(TftlException.class, () -> ModelFile.parse(cut, "model file x.tflite"));
    byte[] plain = java.util.Arrays.copyOf(data, ModelFile.read(Work.file("model.tflite")).flatbufferLength);
    e = assertThrows(TftlException.class, () -> ModelFile.parse(plain, "model file plain.tflite"));
    assertTrue(e.getMessage().contains("not a tftl model"), e.getMessage());
    e = assertThrows(TftlException.class, () -> ModelFile.parse("hello world".getBytes(), "model file a.txt"));
    assertTrue(e.getMessage().contains("not a TFLite model"), e.getMessage());
  }
}

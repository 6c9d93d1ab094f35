package org.tftl.host;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.google.gson.JsonArray;
import com.google.gson.JsonElement;
import com.google.gson.JsonObject;
import com.google.gson.JsonParser;
import java.io.File;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Set;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.tftl.core.Check;

/**
 * contract/vectors/files.json, built by tests/test_android.py into vectors/: the Java reader gives every
 * file the verdict the manifest expects (its "hosts.java" entry where the app differs, e.g. tftl-1),
 * with a one-line message, as Python and the browser's reader do (tests/test_conformance.py).
 */
class ConformanceTest {
  @BeforeAll
  static void need() {
    Work.require();
  }

  @Test
  void everyVectorGetsTheContractsVerdict() throws Exception {
    File dir = Work.file("vectors");
    String text = new String(Files.readAllBytes(new File(dir, "manifest.json").toPath()), StandardCharsets.UTF_8);
    JsonArray manifest = JsonParser.parseString(text).getAsJsonArray();
    assertTrue(manifest.size() >= 70, "vectors: " + manifest.size());
    JsonArray answers = Check.vectors(dir);
    List<String> wrong = new ArrayList<>();
    Set<String> seen = new HashSet<>();
    for (int i = 0; i < manifest.size(); i++) {
      JsonObject c = manifest.get(i).getAsJsonObject();
      JsonObject a = answers.get(i).getAsJsonObject();
      JsonElement hosts = c.get("hosts");
      String want = hosts != null && hosts.getAsJsonObject().has("java")
          ? hosts.getAsJsonObject().get("java").getAsString() : c.get("verdict").getAsString();
      String got = a.get("verdict").getAsString();
      seen.add(got);
      if (!want.equals(got)) {
        wrong.add(c.get("file").getAsString() + ": want " + want + ", got " + got + " (" + a.get("message").getAsString() + ")");
      }
      assertFalse(a.get("message").getAsString().contains("\n"), a.toString());
    }
    assertEquals(List.of(), wrong);
    assertTrue(seen.containsAll(List.of("accepted", "not_tflite", "not_tftl", "damaged", "format", "metadata", "labels", "state")), seen.toString());
  }

  /**
   * contract/vectors/probe.json: the Java core's linear probe (Probe.java) picks Python's L2 with its CV
   * accuracies and fits its kernel and bias within 1e-4 of the largest weight; every recipe resolves alike.
   */
  @Test
  void probeAndRecipeVectorsReproduce() throws Exception {
    File path = new File(System.getProperty("user.dir"), "../../contract/vectors/probe.json");
    JsonObject want = JsonParser.parseString(new String(Files.readAllBytes(path.toPath()), StandardCharsets.UTF_8))
        .getAsJsonObject();
    JsonObject got = Check.probe(want);
    for (int i = 0; i < want.getAsJsonArray("recipes").size(); i++) {
      assertEquals(want.getAsJsonArray("recipes").get(i).getAsJsonObject().get("resolved"), got.getAsJsonArray("recipes").get(i));
    }
    for (int i = 0; i < want.getAsJsonArray("probes").size(); i++) {
      JsonObject w = want.getAsJsonArray("probes").get(i).getAsJsonObject();
      JsonObject g = got.getAsJsonArray("probes").get(i).getAsJsonObject();
      assertEquals(w.get("l2").getAsDouble(), g.get("l2").getAsDouble(), "probe " + i);
      List<Double> cv = new ArrayList<>();
      w.getAsJsonObject("cv_accuracy").entrySet().forEach(e -> cv.add(e.getValue().getAsDouble()));
      for (int j = 0; j < cv.size(); j++) {
        assertEquals(cv.get(j), g.getAsJsonArray("cv_accuracy").get(j).getAsDouble(), 1e-4, "probe " + i + " cv " + j);
      }
      for (String key : new String[] {"kernel", "bias"}) {
        List<Double> expected = new ArrayList<>();
        for (JsonElement e : w.getAsJsonArray(key)) {
          if (e.isJsonArray()) {
            e.getAsJsonArray().forEach(v -> expected.add(v.getAsDouble()));
          } else {
            expected.add(e.getAsDouble());
          }
        }
        double scale = expected.stream().mapToDouble(Math::abs).max().orElse(1);
        JsonArray actual = g.getAsJsonArray(key);
        assertEquals(expected.size(), actual.size());
        for (int j = 0; j < expected.size(); j++) {
          assertEquals(expected.get(j), actual.get(j).getAsDouble(), 1e-4 * scale, "probe " + i + " " + key + " " + j);
        }
      }
    }
  }
}

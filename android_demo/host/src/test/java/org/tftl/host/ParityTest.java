package org.tftl.host;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.google.gson.JsonArray;
import com.google.gson.JsonObject;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.tftl.core.FeatureCache;
import org.tftl.core.TftlModel;

/** Java (CompiledModel C API) against Python ai_edge_litert on identical input bytes. */
class ParityTest {
  @BeforeAll
  static void need() {
    Work.require();
  }

  static void assertClose(double want, double got, String what) {
    assertTrue(want == got || Math.abs(want - got) <= 1e-6 * Math.abs(want), what + ": python " + want + ", java " + got);
  }

  @Test
  void extractedFeaturesEqualPythons() throws Exception {
    try (TftlModel m = Work.open("model.tflite")) {
      float[] got = m.extract(Work.npy("images_train.npy").floats());
      float[] want = Work.npy("features_train.npy").floats();
      assertEquals(want.length, got.length);
      int exact = 0;
      for (int i = 0; i < want.length; i++) {
        assertClose(want[i], got[i], "feature " + i);
        exact += Float.floatToIntBits(want[i]) == Float.floatToIntBits(got[i]) ? 1 : 0;
      }
      System.out.printf("features: %d of %d bit-identical to Python%n", exact, want.length);
    }
  }

  @Test
  void trainingLossesEqualPythonsIncludingAPaddedBatch() throws Exception {
    JsonObject ref = Work.json("reference.json");
    float lr = ref.get("lr").getAsFloat();
    JsonArray plan = ref.getAsJsonArray("plan");
    JsonArray losses = ref.getAsJsonArray("losses");
    try (TftlModel m = Work.open("model.tflite")) {
      FeatureCache cache = Work.cache(m, "train");
      for (int s = 0; s < plan.size(); s++) {
        int a = plan.get(s).getAsJsonArray().get(0).getAsInt();
        int b = plan.get(s).getAsJsonArray().get(1).getAsInt();
        int[] rows = new int[b - a];
        int[] y = new int[b - a];
        for (int i = 0; i < rows.length; i++) {
          rows[i] = a + i;
          y[i] = cache.label(a + i);
        }
        float loss = m.trainFeaturesStep(cache.get(rows), y, lr).loss;
        float want = losses.get(s).getAsFloat();
        assertClose(want, loss, "step " + s + " (" + rows.length + " rows)");
        System.out.printf("step %d: python %.9g java %.9g%s%n", s, want, loss,
            Float.floatToIntBits(want) == Float.floatToIntBits(loss) ? " (bitwise)" : "");
      }
    }
  }
}

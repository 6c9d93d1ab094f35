package org.tftl.host;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.File;
import java.util.Arrays;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.tftl.core.Checkpoint;
import org.tftl.core.TftlModel;
import org.tftl.core.TftlException;
import org.tftl.core.Trainer;

/** Files tftl-train wrote open in the Java core: its checkpoint resumes, its fine-tuned model predicts the same. */
class InteropTest {
  @BeforeAll
  static void need() {
    Work.require();
  }

  static void assertProbsEqual(float[] want, float[] got) {
    assertEquals(want.length, got.length);
    for (int i = 0; i < want.length; i++) {
      ParityTest.assertClose(want[i], got[i], "probability " + i);
    }
  }

  /**
   * A file of the previous format, tftl-2 (scalar learning_rate), still trains here with Python's
   * losses: runSignature never resizes a buffer input, so the scalar-resize crash of LiteRT's
   * aarch64 Python wrapper (issue 18) does not apply to Java.
   */
  @Test
  void tftl2FileTrainsWithPythonsLosses() throws Exception {
    float[] features = Work.npy("v2_features.npy").floats();
    int[] labels = Work.ints("v2_labels.npy");
    float[] want = Work.npy("v2_losses.npy").floats();
    try (TftlModel m = Work.open("v2.tflite")) {
      assertEquals("tftl-2", m.file.meta.raw.get("format").getAsString());
      for (int i = 0; i < want.length; i++) {
        float loss = m.trainFeaturesStep(features, labels, (float) 1e-3).loss;
        assertEquals(want[i], loss, 1e-6f * Math.abs(want[i]), "step " + i);
      }
      assertTrue(want[2] < want[0]);
    }
  }

  @Test
  void tftlTrainFineTunedFileOpensWithItsWeights() throws Exception {
    float[] want = Work.npy("py_ft_probs.npy").floats();
    try (TftlModel m = Work.open("py_ft.tflite")) {
      assertProbsEqual(want, m.predict(Work.npy("images_val.npy").floats()));
    }
  }

  @Test
  void tftlTrainCheckpointRestoresAndResumes(@TempDir File tmp) throws Exception {
    File py = new File(Work.file("py_ckpt"), Checkpoint.NAME);
    try (TftlModel m = Work.open("model.tflite")) {
      Checkpoint c = Checkpoint.load(py, m.file.modelHash(), Work.LABELS);
      assertEquals(2, c.meta.get("epoch").getAsInt());
      float[] images = Work.npy("images_val.npy").floats();
      float[] before = m.predict(images);
      m.restore(c.state, "checkpoint " + py);
      assertProbsEqual(Work.npy("py_ft_probs.npy").floats(), m.predict(images));
      assertFalse(Arrays.equals(before, m.predict(images)));
      Trainer.Config cfg = TrainingTest.config(3);
      Trainer t = new Trainer(m, Work.LABELS, cfg, new File(tmp, Checkpoint.NAME), c);
      t.train(Work.cache(m, "train"), null, null, () -> false);
      assertEquals(3, t.history().size());
    }
  }

  @Test
  void checkpointOfOtherLabelsOrModelIsRefused() throws Exception {
    File py = new File(Work.file("py_ckpt"), Checkpoint.NAME);
    TftlException e = assertThrows(TftlException.class,
        () -> Checkpoint.load(py, "0".repeat(64), Work.LABELS));
    assertTrue(e.getMessage().contains("another model"), e.getMessage());
    String hash = org.tftl.core.ModelFile.read(Work.file("model.tflite")).modelHash();
    e = assertThrows(TftlException.class, () -> Checkpoint.load(py, hash, Arrays.asList("a", "b", "c", "d", "e")));
    assertTrue(e.getMessage().contains("labels"), e.getMessage());
  }
}

package org.tftl.host;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.google.gson.GsonBuilder;
import com.google.gson.JsonArray;
import com.google.gson.JsonObject;
import java.io.File;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CancellationException;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.tftl.core.Checkpoint;
import org.tftl.core.FeatureCache;
import org.tftl.core.ModelFile;
import org.tftl.core.TftlModel;
import org.tftl.core.Trainer;

/**
 * The app's training loop on flowers5 features: the loss falls, validation accuracy clears a
 * floor, a cancelled run resumed from its checkpoint in a fresh model continues with exactly the
 * losses of an uninterrupted run, and the fine-tuned model it writes reopens with its weights.
 * Writes java_steps.json, java_ckpt/ and java_ft.tflite for tests/test_android.py to check in Python.
 */
class TrainingTest {
  static final int EPOCHS = 8;  // JAVA_EPOCHS in tests/test_android.py
  static final double LR = 1e-3;
  static final double VAL_FLOOR = 0.6;

  @BeforeAll
  static void need() {
    Work.require();
  }

  /** Records every step the trainer takes. */
  static final class Recorder implements Trainer.Listener {
    final JsonArray steps = new JsonArray();
    final List<JsonObject> epochs = new ArrayList<>();

    @Override
    public void onStep(int epoch, int step, int stepsPerEpoch, int globalStep, float lr, int[] rows, float loss,
        double runningLoss, double runningAccuracy) {
      JsonObject s = new JsonObject();
      s.addProperty("global_step", globalStep);
      s.addProperty("lr", lr);
      s.addProperty("loss", loss);
      JsonArray r = new JsonArray();
      for (int i : rows) {
        r.add(i);
      }
      s.add("rows", r);
      steps.add(s);
    }

    @Override
    public void onEpoch(JsonObject entry) {
      epochs.add(entry);
    }
  }

  static Trainer.Config config(int epochs) {
    Trainer.Config c = new Trainer.Config();
    c.epochs = epochs;
    c.lr = LR;
    c.seed = 7;
    return c;
  }

  @Test
  void fineTuneLossFallsAccuracyClearsFloorAndFileIsWritten() throws Exception {
    File ckptDir = Work.file("java_ckpt");
    ckptDir.mkdirs();
    Recorder rec = new Recorder();
    ModelFile mf = ModelFile.read(Work.file("model.tflite"));
    try (TftlModel m = new TftlModel(mf, Work.factory())) {
      FeatureCache train = Work.cache(m, "train");
      FeatureCache val = Work.cache(m, "val");
      Trainer t = new Trainer(m, Work.LABELS, config(EPOCHS), new File(ckptDir, Checkpoint.NAME), null);
      t.train(train, val, rec, () -> false);
      double first = rec.epochs.get(0).get("loss").getAsDouble();
      double last = rec.epochs.get(EPOCHS - 1).get("loss").getAsDouble();
      double valAcc = rec.epochs.get(EPOCHS - 1).get("val_accuracy").getAsDouble();
      System.out.printf("java fine-tune: loss %.4f -> %.4f over %d epochs, val accuracy %.3f%n", first, last, EPOCHS,
          valAcc);
      assertTrue(last < 0.7 * first, "loss " + first + " -> " + last);
      assertTrue(valAcc > VAL_FLOOR, "val accuracy " + valAcc);

      File out = Work.file("java_ft.tflite");
      JsonObject summary = new JsonObject();
      summary.addProperty("epochs", EPOCHS);
      summary.addProperty("val_accuracy", valAcc);
      summary.addProperty("base_model", mf.modelHash());
      JsonObject updates = new JsonObject();
      updates.add("training", summary);
      mf.writeFineTuned(out, Work.LABELS, m.state(), updates);

      float[] images = Work.npy("images_val.npy").floats();
      float[] trained = m.predict(images);
      try (TftlModel reopened = Work.open("java_ft.tflite")) {
        assertTrue(reopened.file.meta.trainedState);
        float[] again = reopened.predict(images);
        for (int i = 0; i < trained.length; i++) {
          assertEquals(trained[i], again[i], "probability " + i);
        }
      }
      JsonObject result = new JsonObject();
      result.add("steps", rec.steps);
      result.addProperty("val_accuracy", valAcc);
      result.addProperty("java_step_seconds", stepSeconds(m, train));
      Files.write(Work.file("java_steps.json").toPath(),
          new GsonBuilder().create().toJson(result).getBytes(StandardCharsets.UTF_8));
    }
  }

  /** Mean seconds of one train_features step (batch 8, 1 thread), as tests/test_android.py times Python's. */
  static double stepSeconds(TftlModel m, FeatureCache train) {
    int[] rows = {0, 1, 2, 3, 4, 5, 6, 7};
    int[] y = new int[8];
    for (int i = 0; i < 8; i++) {
      y[i] = train.label(i);
    }
    float[] f = train.get(rows);
    m.trainFeaturesStep(f, y, 1e-4f);
    int n = 30;
    long t0 = System.nanoTime();
    for (int i = 0; i < n; i++) {
      m.trainFeaturesStep(f, y, 1e-4f);
    }
    double s = (System.nanoTime() - t0) / 1e9 / n;
    double py = 0;
    try {
      py = Work.json("reference.json").get("python_step_seconds").getAsDouble();
    } catch (java.io.IOException e) {
      // reported without the Python figure
    }
    System.out.printf("train_features step (batch 8, 1 thread): java %.2f ms, python %.2f ms%n", s * 1e3, py * 1e3);
    return s;
  }

  @Test
  void cancelledRunResumesWithIdenticalLosses(@TempDir File tmp) throws Exception {
    int epochs = 2;
    Recorder full = new Recorder();
    try (TftlModel m = Work.open("model.tflite")) {
      new Trainer(m, Work.LABELS, config(epochs), null, null).train(Work.cache(m, "train"), null, full, () -> false);
    }
    int cancelAt = 30;  // inside the second epoch (25 steps each)
    File ckpt = new File(tmp, Checkpoint.NAME);
    Recorder first = new Recorder();
    try (TftlModel m = Work.open("model.tflite")) {
      Trainer t = new Trainer(m, Work.LABELS, config(epochs), ckpt, null);
      assertThrows(CancellationException.class,
          () -> t.train(Work.cache(m, "train"), null, first, () -> first.steps.size() >= cancelAt));
    }
    Recorder second = new Recorder();
    try (TftlModel m = Work.open("model.tflite")) {
      Checkpoint c = Checkpoint.load(ckpt, m.file.modelHash(), Work.LABELS);
      assertEquals(cancelAt, c.meta.get("global_step").getAsInt());
      new Trainer(m, Work.LABELS, config(epochs), ckpt, c).train(Work.cache(m, "train"), null, second, () -> false);
    }
    JsonArray joined = new JsonArray();
    joined.addAll(first.steps);
    joined.addAll(second.steps);
    assertEquals(full.steps.size(), joined.size());
    for (int i = 0; i < joined.size(); i++) {
      assertEquals(full.steps.get(i), joined.get(i), "step " + i);
    }
  }
}

package org.tftl.host;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.google.gson.JsonArray;
import com.google.gson.JsonElement;
import com.google.gson.JsonObject;
import java.io.File;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.tftl.core.Augment;
import org.tftl.core.Checkpoint;
import org.tftl.core.FeatureCache;
import org.tftl.core.ModelFile;
import org.tftl.core.Npy;
import org.tftl.core.Preprocess;
import org.tftl.core.Recipe;
import org.tftl.core.TftlException;
import org.tftl.core.TftlModel;
import org.tftl.core.Trainer;

/**
 * The recipe's augmented views (issue 19, "one recipe for every host"): {@link Augment}'s constants
 * and crop distribution are tftl/runtime/data.py's (augment.json, written by tests/test_android.py
 * from data.py itself), the views of real flowers5 photos differ from each other and from the centre
 * crop, the cache holds cache_views float16 rows per photo, and a run with the file's recipe on them
 * trains with a falling loss and records augment and cache_views as used. Writes java_views.npz /
 * java_views.json for tests/test_android.py to compare the views' spread with Python's.
 */
class AugmentTest {
  static final int PER_CLASS = 6;
  static final long SEED = 3;
  static final double AREA_TOL = 0.015;  // means of 4000 draws: standard error ~0.004
  static final double ASPECT_TOL = 0.015;
  static final double RATE_TOL = 0.035;

  @BeforeAll
  static void need() {
    Work.require();
  }

  private static double[] pair(JsonObject o, String key) {
    JsonArray a = o.getAsJsonArray(key);
    return new double[] {a.get(0).getAsDouble(), a.get(1).getAsDouble()};
  }

  @Test
  void constantsAndCropDistributionAreTftls() throws Exception {
    JsonObject py = Work.json("augment.json");
    assertEquals(Arrays.toString(new double[] {Augment.CROP_SCALE_MIN, Augment.CROP_SCALE_MAX}),
        Arrays.toString(pair(py, "crop_scale")));
    assertEquals(Arrays.toString(new double[] {Augment.CROP_RATIO_MIN, Augment.CROP_RATIO_MAX}),
        Arrays.toString(pair(py, "crop_ratio")));
    assertEquals(py.get("crop_attempts").getAsInt(), Augment.CROP_ATTEMPTS);
    int draws = py.get("draws").getAsInt();
    for (JsonElement e : py.getAsJsonArray("sizes")) {
      JsonObject s = e.getAsJsonObject();
      int w = s.get("width").getAsInt();
      int h = s.get("height").getAsInt();
      double[] got = new double[4];  // area fraction, log aspect, flips, whole-image fallbacks
      for (int i = 0; i < draws; i++) {
        Augment.View v = Augment.view(w, h, SEED, i, w);
        double bw = v.box[2] - v.box[0];
        double bh = v.box[3] - v.box[1];
        assertTrue(v.box[0] >= 0 && v.box[1] >= 0 && v.box[2] <= w && v.box[3] <= h, Arrays.toString(v.box));
        got[0] += bw * bh / ((double) w * h);
        got[1] += Math.log(bw / bh);
        got[2] += v.flip ? 1 : 0;
        got[3] += bw * bh / ((double) w * h) > 0.999 ? 1 : 0;
      }
      String where = w + "x" + h;
      assertEquals(s.get("area").getAsDouble(), got[0] / draws, AREA_TOL, where + " area");
      assertEquals(s.get("log_aspect").getAsDouble(), got[1] / draws, ASPECT_TOL, where + " aspect");
      assertEquals(s.get("flip").getAsDouble(), got[2] / draws, RATE_TOL, where + " flip");
      assertEquals(s.get("whole").getAsDouble(), got[3] / draws, RATE_TOL, where + " fallback");
    }
  }

  @Test
  void cacheRefusesViewsBeyondItsBound() {
    int row = (int) (FeatureCache.MAX_BYTES / 2 / Recipe.MAX_VIEWS) + 1;  // one photo's views: just over the bound
    FeatureCache c = new FeatureCache(row, Recipe.MAX_VIEWS);
    TftlException e = assertThrows(TftlException.class, () -> c.add(new float[0], new int[1]));  // refused unread
    assertTrue(e.getMessage().contains("cache_views") && e.getMessage().contains("MiB"), e.getMessage());
    assertEquals(0, c.size());
    FeatureCache small = new FeatureCache(3, 2);
    small.add(new float[] {1, 2, 3, 4, 5, 6}, new int[] {1});
    assertEquals(2L * 2 * 1 * 3, small.featureBytes());
    assertEquals(4f, small.get(new int[] {0}, new int[] {1})[0], 4f / 1024);  // float16 of 4/6, times 6
  }

  /**
   * The recipe's views of photo number {@code index}: float32 [views, R, R, 3], each checked to differ
   * from the centre crop and from every other view, except where both drew the same box and flip
   * (data.py's fallback when no random box fits: the whole image at an allowed aspect).
   */
  private static float[] views(Work.Decoded d, float[] centre, String photo, int index, int views, int size) {
    int r = size * size * 3;
    float[] out = new float[views * r];
    List<String> draws = new ArrayList<>();
    draws.add(Arrays.toString(Preprocess.centerCropBox(d.width, d.height)) + false);
    List<float[]> seen = new ArrayList<>();
    seen.add(centre);
    for (int v = 0; v < views; v++) {
      Augment.View a = Augment.view(d.width, d.height, SEED, v, index);
      float[] img = Preprocess.fromDecoded(d.rgb, d.width, d.height, a.box, a.flip, d.width, d.width, size);
      assertEquals(r, img.length);
      String draw = Arrays.toString(a.box) + a.flip;
      for (int k = 0; k < seen.size(); k++) {
        assertEquals(draws.get(k).equals(draw), Arrays.equals(img, seen.get(k)),
            photo + ": view " + v + " against " + (k == 0 ? "the centre crop" : "view " + (k - 1)));
      }
      draws.add(draw);
      seen.add(img);
      System.arraycopy(img, 0, out, v * r, r);
    }
    assertTrue(new java.util.HashSet<>(draws).size() > views / 2, photo + ": mostly repeated views " + draws);
    return out;
  }

  @Test
  void recipeViewsOfRealPhotosTrainWithFallingLoss(@TempDir File tmp) throws Exception {
    ModelFile mf = ModelFile.read(Work.file("model.tflite"));
    Recipe recipe = mf.meta.recipe;
    int v = recipe.cacheViews;
    assertTrue(v > 1, "the export's recipe caches " + v + " views");
    JsonArray names = new JsonArray();
    try (TftlModel m = new TftlModel(mf, Work.factory())) {
      FeatureCache train = new FeatureCache(m.featureElements, v);
      FeatureCache centre = new FeatureCache(m.featureElements);
      for (int c = 0; c < Work.LABELS.size(); c++) {
        File[] files = new File(Work.file("train"), Work.LABELS.get(c)).listFiles();
        Arrays.sort(files);
        for (File f : Arrays.copyOf(files, PER_CLASS)) {
          Work.Decoded d = Work.decode(f, 1);
          float[] centred = Preprocess.fromPixels(d.rgb, d.width, d.height, m.imageSize);
          train.add(m.extract(views(d, centred, f.getName(), train.size(), v, m.imageSize)), new int[] {c});
          centre.add(m.extract(centred), new int[] {c});
          names.add(Work.LABELS.get(c) + "/" + f.getName());
        }
      }
      int n = train.size();
      assertEquals(2L * v * n * m.featureElements, train.featureBytes());
      Trainer.Config cfg = Trainer.Config.of(recipe, n, m.batch);
      cfg.seed = SEED;
      File ckpt = new File(tmp, Checkpoint.NAME);
      Trainer t = new Trainer(m, Work.LABELS, cfg, ckpt, null);
      t.train(train, null, null, () -> false);
      int epochs = t.history().size();
      double first = t.history().get(0).getAsJsonObject().get("loss").getAsDouble();
      double late = 0;  // 4 steps an epoch on ever-changing views: one epoch's loss is noisy, their mean is not
      for (int e = epochs / 2; e < epochs; e++) {
        late += t.history().get(e).getAsJsonObject().get("loss").getAsDouble() / (epochs - epochs / 2);
      }
      assertEquals(cfg.epochs, epochs);
      assertTrue(late < 0.6 * first, "loss " + first + " in epoch 1, " + late + " in the last half of " + epochs);
      JsonObject settings = Checkpoint.load(ckpt, mf.modelHash(), Work.LABELS).meta.getAsJsonObject("settings");
      assertTrue(settings.get("augment").getAsBoolean());
      assertEquals(v, settings.get("cache_views").getAsInt());
      assertEquals(v, settings.getAsJsonObject("head_fit").get("views").getAsInt());
      int[] all = new int[n];
      for (int i = 0; i < n; i++) {
        all[i] = i;
      }
      float[] rows = new float[n * v * m.featureElements];
      int[] view = new int[n];
      for (int k = 0; k < v; k++) {
        Arrays.fill(view, k);
        float[] f = train.get(all, view);
        for (int i = 0; i < n; i++) {
          System.arraycopy(f, i * m.featureElements, rows, (i * v + k) * m.featureElements, m.featureElements);
        }
      }
      Map<String, Npy.Array> out = new LinkedHashMap<>();
      out.put("centre", Npy.Array.ofFloats(centre.get(all), new int[] {n, m.featureElements}));
      out.put("views", Npy.Array.ofFloats(rows, new int[] {n, v, m.featureElements}));
      Files.write(Work.file("java_views.npz").toPath(), Npy.writeNpz(out));
      JsonObject report = new JsonObject();
      report.add("photos", names);
      report.add("settings", settings);
      report.add("history", t.history());
      Files.write(Work.file("java_views.json").toPath(), report.toString().getBytes(StandardCharsets.UTF_8));
    }
  }
}

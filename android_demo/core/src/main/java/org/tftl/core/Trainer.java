package org.tftl.core;

import com.google.gson.JsonArray;
import com.google.gson.JsonElement;
import com.google.gson.JsonObject;
import java.io.File;
import java.io.IOException;
import java.math.BigInteger;
import java.util.List;
import java.util.SplittableRandom;
import java.util.concurrent.CancellationException;
import java.util.function.BooleanSupplier;

/**
 * The app's fine-tuning loop over cached trunk features (tftl/runtime/loop.py with a feature
 * cache): each epoch one cached view per photo ({@link #draws}, as CachedFeatures.draw; the cache
 * holds the recipe's cache_views {@link Augment} views), shuffled batches through
 * {@code train_features}, the last batch padded with sample_weight 0, a linear warm-up then cosine
 * learning rate ({@link #cosineLr}), validation on held-out features (their centre crops), and after
 * every epoch an atomic checkpoint in tftl-train's format.
 *
 * <p>Each epoch's order is a Fisher-Yates shuffle from SplittableRandom(seed, epoch), so a run
 * resumed mid-epoch (after cancel or a killed app) continues with exactly the same batches.
 * Python's numpy generator cannot be reproduced here: a checkpoint moved between tftl-train and
 * the app resumes validly, with its own generator's order from then on.
 */
public final class Trainer {
  /** What the UI shows; called on the training thread. */
  public interface Listener {
    void onStep(int epoch, int step, int stepsPerEpoch, int globalStep, float learningRate, int[] rows, float loss,
        double runningLoss, double runningAccuracy);

    void onEpoch(JsonObject entry);
  }

  /** The run's settings; {@link #of} takes them from the model file's recipe, as tftl-train does. */
  public static final class Config {
    public int epochs = Recipe.LEGACY.epochs;
    public double lr = Recipe.LEGACY.lr;
    /** null: min(50, total steps / 10), as tftl-train. */
    public Integer warmupSteps;
    public long seed = 0;
    /** Also checkpoint every this many steps within an epoch (0: at epoch end only), so a killed app loses little. */
    public int checkpointEverySteps = 0;
    /** "probe": fit the classifier (kernel, bias state names) as a linear probe before the first step. */
    public String headInit = Recipe.LEGACY.headInit;
    public List<String> classifier = Recipe.LEGACY.classifier;
    /** Whether the training cache holds augmented views: {@link #of} sets it, as tftl-train's default --augment. */
    public boolean augment = false;
    /** Augmented views the training cache holds per photo when augmenting (the recipe's cache_views). */
    public int cacheViews = 1;

    /** The recipe's settings for a training set of {@code images} photos at {@code batch} (loop.Trainer's defaults). */
    public static Config of(Recipe recipe, int images, int batch) {
      Config c = new Config();
      c.epochs = recipe.epochsFor(images, batch);
      c.lr = recipe.lr;
      c.warmupSteps = recipe.warmupSteps;
      c.headInit = recipe.headInit;
      c.classifier = recipe.classifier;
      c.augment = true;
      c.cacheViews = recipe.cacheViews;
      return c;
    }
  }

  private final TftlModel model;
  private final Config cfg;
  private final List<String> labels;
  private final File checkpointFile;
  private final JsonObject state = new JsonObject();
  private final JsonArray history = new JsonArray();

  /**
   * @param checkpointFile where each epoch's checkpoint goes (null: none)
   * @param resume a checkpoint to continue from (null: start from the model's weights)
   */
  public Trainer(TftlModel model, List<String> labels, Config cfg, File checkpointFile, Checkpoint resume) {
    this.model = model;
    this.cfg = cfg;
    this.labels = ModelFile.checkLabels(labels);
    this.checkpointFile = checkpointFile;
    state.addProperty("epoch", 0);
    state.addProperty("position", 0);
    state.addProperty("global_step", 0);
    state.add("partial", new JsonObject());
    if (resume != null) {
      model.restore(resume.state, "checkpoint");
      for (String k : new String[] {"epoch", "position", "global_step"}) {
        state.addProperty(k, resume.meta.get(k).getAsInt());
      }
      JsonElement partial = resume.meta.get("partial");
      state.add("partial", partial != null && partial.isJsonObject() ? partial.deepCopy() : new JsonObject());
      JsonElement h = resume.meta.get("history");
      if (h != null && h.isJsonArray()) {
        history.addAll(h.getAsJsonArray().deepCopy());
      }
    }
  }

  /** Linear warm-up then cosine decay to 0: tftl.runtime.schedule.cosine_lr, in the same double arithmetic. */
  public static double cosineLr(double baseLr, int step, int totalSteps, int warmupSteps) {
    if (warmupSteps > 0 && step < warmupSteps) {
      return baseLr * (step + 1) / warmupSteps;
    }
    double t = (double) (step - warmupSteps) / Math.max(1, totalSteps - warmupSteps);
    return 0.5 * baseLr * (1.0 + Math.cos(Math.PI * Math.min(1.0, t)));
  }

  /** The rows of {@code n} in the order epoch {@code epoch} visits them. */
  public static int[] order(long seed, int epoch, int n) {
    SplittableRandom rng = new SplittableRandom(seed * 1_000_003L + epoch);
    int[] perm = new int[n];
    for (int i = 0; i < n; i++) {
      perm[i] = i;
    }
    for (int i = n - 1; i > 0; i--) {
      int j = rng.nextInt(i + 1);
      int t = perm[i];
      perm[i] = perm[j];
      perm[j] = t;
    }
    return perm;
  }

  /**
   * The cached view each of {@code n} photos uses in epoch {@code epoch} (CachedFeatures.draw), from
   * its own SplittableRandom(seed, epoch), so a resumed run draws the same; null with one view.
   */
  public static int[] draws(long seed, int epoch, int n, int views) {
    if (views <= 1) {
      return null;
    }
    SplittableRandom rng = new SplittableRandom((seed * 1_000_003L + epoch) * 31 + 0xd7a3L);
    int[] v = new int[n];
    for (int i = 0; i < n; i++) {
      v[i] = rng.nextInt(views);
    }
    return v;
  }

  public JsonArray history() {
    return history;
  }

  public int epoch() {
    return state.get("epoch").getAsInt();
  }

  /**
   * Trains until cfg.epochs epochs are done.
   *
   * @param train features of the training photos
   * @param val features of held-out photos (null: no validation)
   * @param cancelled polled between steps; when true, a checkpoint is saved and CancellationException thrown
   * @throws TftlException when the loss becomes NaN or infinite (the last good checkpoint is kept)
   */
  public void train(FeatureCache train, FeatureCache val, Listener listener, BooleanSupplier cancelled)
      throws IOException {
    int n = train.size();
    if (n == 0) {
      throw new TftlException("no photos collected yet — add photos to at least one class");
    }
    int batch = model.batch;
    int stepsPerEpoch = (n + batch - 1) / batch;
    int total = stepsPerEpoch * cfg.epochs;
    int warmup = cfg.warmupSteps != null ? cfg.warmupSteps : Math.min(50, total / 10);
    JsonObject settings = settings(cfg, train, batch, warmup, val == null ? 0 : val.size());
    if (cfg.headInit.equals("probe") && state.get("global_step").getAsInt() == 0 && state.get("position").getAsInt() == 0) {
      settings.add("head_fit", fitHead(train));
    }
    while (epoch() < cfg.epochs) {
      runEpoch(train, val, listener, cancelled, stepsPerEpoch, total, warmup, settings);
      save(settings);
    }
  }

  private void runEpoch(FeatureCache train, FeatureCache val, Listener listener, BooleanSupplier cancelled,
      int stepsPerEpoch, int total, int warmup, JsonObject settings) throws IOException {
    int epoch = epoch();
    int batch = model.batch;
    int n = train.size();
    int[] perm = order(cfg.seed, epoch, n);
    int[] draws = draws(cfg.seed, epoch, n, train.views);
    JsonObject partial = state.getAsJsonObject("partial");
    double lossSum = partial.has("loss_sum") ? partial.get("loss_sum").getAsDouble() : 0;
    int correct = partial.has("correct") ? partial.get("correct").getAsInt() : 0;
    int seen = partial.has("seen") ? partial.get("seen").getAsInt() : 0;
    double trainSeconds = partial.has("train_seconds") ? partial.get("train_seconds").getAsDouble() : 0;
    long t0 = System.nanoTime();
    for (int b = state.get("position").getAsInt(); b < stepsPerEpoch; b++) {
      if (cancelled.getAsBoolean()) {
        save(settings);
        throw new CancellationException("training cancelled at epoch " + (epoch + 1) + ", step " + b
            + "; the checkpoint continues from there");
      }
      int[] idx = java.util.Arrays.copyOfRange(perm, b * batch, Math.min(n, (b + 1) * batch));
      int[] y = new int[idx.length];
      for (int i = 0; i < idx.length; i++) {
        y[i] = train.label(idx[i]);
      }
      int global = state.get("global_step").getAsInt();
      float lr = (float) cosineLr(cfg.lr, global, total, warmup);
      TftlModel.Step step = model.trainFeaturesStep(train.get(idx, draws), y, lr);
      if (!Float.isFinite(step.loss)) {
        throw new TftlException("loss became " + step.loss + " at epoch " + (epoch + 1) + ", step " + (b + 1)
            + " (learning rate " + lr + "); the last good checkpoint is kept — lower the learning rate and train again");
      }
      lossSum += (double) step.loss * idx.length;
      correct += countCorrect(step.probabilities, y);
      seen += idx.length;
      state.addProperty("global_step", global + 1);
      state.addProperty("position", b + 1);
      JsonObject p = new JsonObject();
      p.addProperty("loss_sum", lossSum);
      p.addProperty("correct", correct);
      p.addProperty("seen", seen);
      p.addProperty("train_seconds", trainSeconds + (System.nanoTime() - t0) / 1e9);
      p.add("skipped", new JsonArray());
      state.add("partial", p);
      if (cfg.checkpointEverySteps > 0 && (global + 1) % cfg.checkpointEverySteps == 0 && b + 1 < stepsPerEpoch) {
        save(settings);
      }
      if (listener != null) {
        listener.onStep(epoch, b, stepsPerEpoch, global, lr, idx, step.loss, lossSum / seen, (double) correct / seen);
      }
    }
    trainSeconds += (System.nanoTime() - t0) / 1e9;
    JsonObject entry = new JsonObject();
    entry.addProperty("epoch", epoch + 1);
    entry.addProperty("loss", lossSum / Math.max(seen, 1));
    entry.addProperty("train_accuracy", (double) correct / Math.max(seen, 1));
    addValidation(entry, val);
    entry.addProperty("learning_rate", cosineLr(cfg.lr, Math.max(state.get("global_step").getAsInt() - 1, 0), total, warmup));
    entry.addProperty("seconds", Math.round(trainSeconds * 1000) / 1000.0);
    entry.addProperty("train_seconds", Math.round(trainSeconds * 1000) / 1000.0);
    entry.addProperty("images_per_second", Math.round(seen / Math.max(trainSeconds, 1e-9) * 10) / 10.0);
    entry.addProperty("images", seen);
    entry.addProperty("skipped", 0);
    history.add(entry);
    state.addProperty("epoch", epoch + 1);
    state.addProperty("position", 0);
    state.add("partial", new JsonObject());
    if (listener != null) {
      listener.onEpoch(entry);
    }
  }

  /**
   * The LP of LP-FT (loop.Trainer._fit_head): the classifier fitted by {@link Probe} on each cached
   * photo's mean embed_features over its views, then restored into the model with the rest of its
   * state; returns the fit's record (tftl-train's settings.head_fit).
   */
  private JsonObject fitHead(FeatureCache train) {
    long t0 = System.nanoTime();
    int n = train.size();
    int[] all = new int[n];
    int[] y = new int[n];
    for (int i = 0; i < n; i++) {
      all[i] = i;
      y[i] = train.label(i);
    }
    double[] x = null;
    int[] view = new int[n];
    for (int v = 0; v < train.views; v++) {
      java.util.Arrays.fill(view, v);
      float[] emb = model.embedFeatures(train.get(all, view));
      x = x == null ? new double[emb.length] : x;
      for (int i = 0; i < x.length; i++) {
        x[i] += emb[i];
      }
    }
    for (int i = 0; i < x.length; i++) {
      x[i] /= train.views;
    }
    int d = x.length / n;
    Probe.Fit fit = Probe.fitHead(x, y, n, d, model.numLabels);
    java.util.Map<String, Npy.Array> state = new java.util.LinkedHashMap<>(model.state());
    state.put(cfg.classifier.get(0), Npy.Array.ofFloats(fit.kernel, new int[] {d, model.numLabels}));
    state.put(cfg.classifier.get(1), Npy.Array.ofFloats(fit.bias, new int[] {model.numLabels}));
    model.restore(state, "the fitted head");
    JsonObject info = new JsonObject();
    info.addProperty("l2", fit.l2);
    JsonObject cv = new JsonObject();
    for (int i = 0; i < Probe.L2_GRID.length; i++) {
      String l2 = new java.math.BigDecimal(Double.toString(Probe.L2_GRID[i])).stripTrailingZeros().toPlainString();
      cv.addProperty(l2, Math.round(fit.cvAccuracy[i] * 1e4) / 1e4);  // probe.fit_head's record
    }
    info.add("cv_accuracy", cv);
    info.addProperty("views", train.views);
    info.addProperty("images", n);
    info.addProperty("seconds", Math.round((System.nanoTime() - t0) / 1e7) / 100.0);
    return info;
  }

  private int countCorrect(float[] probs, int[] y) {
    int k = model.numLabels;
    int correct = 0;
    for (int i = 0; i < y.length; i++) {
      if (argmax(probs, i * k, k) == y[i]) {
        correct++;
      }
    }
    return correct;
  }

  static int argmax(float[] v, int from, int len) {
    int best = 0;
    for (int j = 1; j < len; j++) {
      if (v[from + j] > v[from + best]) {
        best = j;
      }
    }
    return best;
  }

  private void addValidation(JsonObject entry, FeatureCache val) {
    if (val == null || val.size() == 0) {
      entry.add("val_accuracy", null);
      entry.add("val_loss", null);
      return;
    }
    int[] all = new int[val.size()];
    int[] y = new int[all.length];
    for (int i = 0; i < all.length; i++) {
      all[i] = i;
      y[i] = val.label(i);
    }
    float[] probs = model.predictFeatures(val.get(all));
    int k = model.numLabels;
    double loss = 0;
    for (int i = 0; i < y.length; i++) {
      loss -= Math.log(Math.max(probs[i * k + y[i]], 1e-12));
    }
    entry.addProperty("val_accuracy", (double) countCorrect(probs, y) / y.length);
    entry.addProperty("val_loss", loss / y.length);
  }

  /**
   * The run's settings as tftl-train records them, augment and cache_views as used: refuses a
   * training cache whose views are not what cfg asks for (a cache built for another recipe).
   */
  public static JsonObject settings(Config cfg, FeatureCache train, int batch, int warmup, int valImages) {
    int want = cfg.augment ? cfg.cacheViews : 1;
    if (train.views != want) {
      throw new TftlException("the training cache holds " + train.views + " view(s) per photo, the run "
          + (cfg.augment ? "caches " + want + " augmented views (the recipe's cache_views)" : "one unaugmented view")
          + " — rebuild the cache with " + want);
    }
    int n = train.size();
    JsonObject s = new JsonObject();
    s.addProperty("epochs", cfg.epochs);
    s.addProperty("lr", cfg.lr);
    s.addProperty("warmup_steps", warmup);
    s.addProperty("augment", cfg.augment);
    s.addProperty("cache_features", true);
    s.addProperty("cache_views", train.views);
    s.addProperty("seed", cfg.seed);
    s.addProperty("head_init", cfg.headInit);
    s.addProperty("train_images", n);
    s.addProperty("batch", batch);
    s.add("val", null);
    s.add("val_split", null);
    s.addProperty("val_images", valImages);
    s.addProperty("trainer", "android_demo");
    return s;
  }

  /**
   * A numpy PCG64 bit_generator state (what tftl-train stores as rng_state), derived from the seed
   * and epoch, so that tftl-train --resume accepts the app's checkpoint.
   */
  static JsonObject numpyRngState(long seed, int epoch) {
    SplittableRandom r = new SplittableRandom(seed * 1_000_003L + epoch + 0x5eed);
    BigInteger s = new BigInteger(1, longs(r.nextLong(), r.nextLong()));
    BigInteger inc = new BigInteger(1, longs(r.nextLong(), r.nextLong())).setBit(0);
    JsonObject inner = new JsonObject();
    inner.addProperty("state", s);
    inner.addProperty("inc", inc);
    JsonObject o = new JsonObject();
    o.addProperty("bit_generator", "PCG64");
    o.add("state", inner);
    o.addProperty("has_uint32", 0);
    o.addProperty("uinteger", 0);
    return o;
  }

  private static byte[] longs(long a, long b) {
    return java.nio.ByteBuffer.allocate(16).putLong(a).putLong(b).array();
  }

  /** Writes the checkpoint of the current position (after an epoch, or on cancel). */
  private void save(JsonObject settings) throws IOException {
    if (checkpointFile == null) {
      return;
    }
    JsonObject meta = new JsonObject();
    meta.addProperty("format", Checkpoint.FORMAT);
    meta.addProperty("model_hash", model.file.modelHash());
    JsonArray l = new JsonArray();
    for (String label : labels) {
      l.add(label);
    }
    meta.add("labels", l);
    meta.addProperty("epoch", epoch());
    meta.addProperty("position", state.get("position").getAsInt());
    meta.addProperty("global_step", state.get("global_step").getAsInt());
    meta.add("rng_state", numpyRngState(cfg.seed, epoch()));
    meta.add("partial", state.get("partial").deepCopy());
    meta.add("settings", settings);
    meta.add("history", history.deepCopy());
    meta.add("skipped", new JsonObject());
    new Checkpoint(model.state(), meta).save(checkpointFile);
  }
}

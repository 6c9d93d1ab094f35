package org.tftl.app;

import com.google.gson.JsonObject;
import java.io.File;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CancellationException;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.atomic.AtomicBoolean;
import org.tftl.core.Checkpoint;
import org.tftl.core.FeatureCache;
import org.tftl.core.Files2;
import org.tftl.core.ModelFile;
import org.tftl.core.Npy;
import org.tftl.core.Preprocess;
import org.tftl.core.SignatureInterpreter;
import org.tftl.core.TftlException;
import org.tftl.core.TftlModel;
import org.tftl.core.Trainer;

/**
 * Everything the app's screens do, without android.*: load a model, name its classes, add photos
 * (kept as trunk features, not pixels), train in the background with progress and cancel,
 * persist after every photo and epoch, restore at start-up, export the fine-tuned model, and
 * classify with top-3 and latency. Activities call it and render {@link State}; it lives in the
 * Application, so it outlives configuration changes, and its storage outlives the process.
 *
 * <p>Storage (app-private folder, every file written atomically): model.tflite (the loaded
 * model), classes.txt, features.npz (the feature cache), checkpoint.npz (tftl-train's format).
 */
public final class PersonalizeViewModel implements AutoCloseable {
  /** Creates the interpreter: LiteRT's Interpreter on Android, the host backend in tests. */
  public interface InterpreterFactory {
    SignatureInterpreter create(byte[] flatbuffer, int threads);
  }

  /** What the screens show; delivered on the calling or the training thread (Activities post it). */
  public interface Observer {
    void onState(State state);
  }

  /** A snapshot for the UI. */
  public static final class State {
    public String model;
    public List<String> labels = Collections.emptyList();
    public int[] photos = new int[0];
    public boolean training;
    public int epoch;
    public int epochs;
    public int step;
    public int steps;
    public double loss = Double.NaN;
    public double accuracy = Double.NaN;
    public double valAccuracy = Double.NaN;
    public int threads;
    public String message;
  }

  /** One classification: the best labels with their probabilities, and the time it took. */
  public static final class Prediction {
    public final List<String> labels;
    public final float[] probabilities;
    public final double millis;

    Prediction(List<String> labels, float[] probabilities, double millis) {
      this.labels = labels;
      this.probabilities = probabilities;
      this.millis = millis;
    }
  }

  static final String MODEL = "model.tflite";
  static final String CLASSES = "classes.txt";
  static final String FEATURES = "features.npz";

  private final File dir;
  private final InterpreterFactory factory;
  private final ExecutorService worker = Executors.newSingleThreadExecutor(r -> {
    Thread t = new Thread(r, "tftl-train");
    t.setDaemon(true);
    return t;
  });
  private final AtomicBoolean cancel = new AtomicBoolean();
  private final State state = new State();
  private volatile Observer observer;
  private TftlModel model;
  private FeatureCache cache;
  private List<String> labels;
  private Future<?> running;

  /** Restores what a previous run left in {@code storageDir} (model, classes, photos' features, weights). */
  public PersonalizeViewModel(File storageDir, InterpreterFactory factory, int threads) throws IOException {
    this.dir = storageDir;
    this.factory = factory;
    state.threads = Math.max(1, threads);
    File saved = new File(dir, MODEL);
    if (saved.isFile()) {
      open(ModelFile.read(saved), false);
      state.message = "restored " + cache.size() + " photos" + (new File(dir, Checkpoint.NAME).isFile()
          ? " and the trained weights" : "");
    }
  }

  public void setObserver(Observer o) {
    observer = o;
    publish();
  }

  /** Loads a model (from assets or a picked file); replaces the current one and its photos. */
  public synchronized void loadModel(byte[] data, String name) throws IOException {
    requireIdle();
    ModelFile mf = ModelFile.parse(data, "model file " + name);
    for (String f : new String[] {MODEL, CLASSES, FEATURES, Checkpoint.NAME}) {
      new File(dir, f).delete();
    }
    Files2.writeAtomically(new File(dir, MODEL), data);
    open(mf, true);
    state.model = name;
    state.message = "loaded " + name;
    publish();
  }

  private void open(ModelFile mf, boolean fresh) throws IOException {
    if (model != null) {
      model.close();
    }
    model = new TftlModel(mf, fb -> factory.create(fb, state.threads));
    state.model = state.model == null ? MODEL : state.model;
    labels = new ArrayList<>(mf.labels);
    File classes = new File(dir, CLASSES);
    if (!fresh && classes.isFile()) {
      List<String> saved = ModelFileText.lines(classes);
      if (saved.size() != mf.meta.numLabels) {
        throw new IOException(classes + " has " + saved.size() + " names, the model " + mf.meta.numLabels);
      }
      labels = new ArrayList<>(ModelFile.checkLabels(saved));
    }
    cache = new FeatureCache(model.featureElements);
    File features = new File(dir, FEATURES);
    if (!fresh && features.isFile()) {
      cache = FeatureCache.fromNpz(Files2.readFile(features, ModelFile.MAX_FILE_BYTES), model.featureElements);
      for (int r = 0; r < cache.size(); r++) {
        if (cache.label(r) < 0 || cache.label(r) >= labels.size()) {
          throw new IOException(features + " holds class " + cache.label(r) + " but the model has " + labels.size());
        }
      }
    }
    File ckpt = new File(dir, Checkpoint.NAME);
    if (!fresh && ckpt.isFile()) {
      Checkpoint c = Checkpoint.load(ckpt, mf.modelHash(), labels);
      model.restore(c.state, "checkpoint " + ckpt);
    }
    publish();
  }

  /** Renames class slot {@code slot} (up to the model's K slots); the checkpoint follows the new names. */
  public synchronized void renameClass(int slot, String name) throws IOException {
    requireModel();
    requireIdle();
    List<String> next = new ArrayList<>(labels);
    next.set(slot, name.trim());
    ModelFile.checkLabels(next);
    File ckpt = new File(dir, Checkpoint.NAME);
    if (ckpt.isFile()) {
      Checkpoint c = Checkpoint.load(ckpt, model.file.modelHash(), labels);
      com.google.gson.JsonArray l = new com.google.gson.JsonArray();
      next.forEach(l::add);
      c.meta.add("labels", l);
      c.save(ckpt);
    }
    labels = next;
    Files2.writeAtomically(new File(dir, CLASSES), (org.tftl.core.Text.join("\n", labels) + "\n").getBytes(StandardCharsets.UTF_8));
    publish();
  }

  /** Preprocesses a photo exactly as tftl does: float32 [R, R, 3]. */
  float[] preprocess(Photo photo) throws IOException {
    int[] full = photo.uprightSize();
    int size = model.imageSize;
    Photo.Decoded d = photo.decode(Preprocess.draftScale(full[0], full[1], size));
    return Preprocess.fromDecoded(d.rgb, d.width, d.height, full[0], full[1], d.rawWidth, d.rawDecodedWidth, size);
  }

  /** Adds a photo to class {@code slot}: its trunk features are extracted once and kept; saved at once. */
  public synchronized void addPhoto(int slot, Photo photo) throws IOException {
    requireModel();
    requireIdle();
    if (slot < 0 || slot >= labels.size()) {
      throw new TftlException("class " + slot + " does not exist: the model has " + labels.size() + " classes");
    }
    cache.add(model.extract(preprocess(photo)), new int[] {slot});
    Files2.writeAtomically(new File(dir, FEATURES), cache.toNpz());
    publish();
  }

  /** Changes the interpreter's thread count; the trained state carries over. */
  public synchronized void setThreads(int threads) throws IOException {
    requireIdle();
    state.threads = Math.max(1, threads);
    if (model != null) {
      Map<String, Npy.Array> weights = model.state();
      ModelFile mf = model.file;
      model.close();
      model = new TftlModel(mf, fb -> factory.create(fb, state.threads));
      model.restore(weights, "the current weights");
    }
    publish();
  }

  /**
   * Starts training in the background: continues an interrupted run of the same photos, else a
   * new run from the current weights. Progress arrives through the observer.
   */
  public synchronized Future<?> startTraining(Integer epochs, Double lr) throws IOException {
    requireModel();
    requireIdle();
    if (cache.size() == 0) {
      throw new TftlException("no photos yet — add photos to at least one class first");
    }
    // The model file's recipe (lr, epochs rule, warm-up, head_init), with the given epochs / lr over it (null: the recipe's).
    Trainer.Config cfg = Trainer.Config.of(model.file.meta.recipe, cache.size(), model.batch);
    cfg.epochs = epochs != null ? epochs : cfg.epochs;
    cfg.lr = lr != null ? lr : cfg.lr;
    File ckpt = new File(dir, Checkpoint.NAME);
    Checkpoint resume = null;
    if (ckpt.isFile()) {
      Checkpoint c = Checkpoint.load(ckpt, model.file.modelHash(), labels);
      JsonObject s = c.meta.getAsJsonObject("settings");
      boolean unfinished = c.meta.get("epoch").getAsInt() < cfg.epochs || c.meta.get("position").getAsInt() > 0;
      if (unfinished && s != null && s.get("train_images").getAsInt() == cache.size()
          && s.get("epochs").getAsInt() == cfg.epochs) {
        resume = c;
      }
    }
    Trainer trainer = new Trainer(model, labels, cfg, ckpt, resume);
    cancel.set(false);
    state.training = true;
    state.epochs = cfg.epochs;
    state.epoch = trainer.epoch();
    state.step = 0;
    state.loss = Double.NaN;
    state.accuracy = Double.NaN;
    state.message = resume != null ? "continuing from epoch " + (trainer.epoch() + 1) : "training";
    publish();
    running = worker.submit(() -> runTraining(trainer));
    return running;
  }

  private void runTraining(Trainer trainer) {
    try {
      trainer.train(cache, null, new Trainer.Listener() {
        @Override
        public void onStep(int epoch, int step, int stepsPerEpoch, int globalStep, float lr, int[] rows, float loss,
            double runningLoss, double runningAccuracy) {
          state.epoch = epoch + 1;
          state.step = step + 1;
          state.steps = stepsPerEpoch;
          state.loss = runningLoss;
          state.accuracy = runningAccuracy;
          publish();
        }

        @Override
        public void onEpoch(JsonObject entry) {
          state.message = "epoch " + entry.get("epoch").getAsInt() + " saved";
          publish();
        }
      }, cancel::get);
      state.message = "done: loss " + String.format("%.3f", state.loss) + ", accuracy "
          + String.format("%.2f", state.accuracy);
    } catch (CancellationException e) {
      state.message = "cancelled; Train continues where it stopped";
    } catch (IOException | RuntimeException e) {
      state.message = e.getMessage();
    } finally {
      synchronized (this) {
        state.training = false;
      }
      publish();
    }
  }

  /** Asks the running training to stop after the current step (it saves a checkpoint). */
  public void cancelTraining() {
    cancel.set(true);
  }

  /** Writes the fine-tuned model (tftl-train --output's format) to {@code out}. */
  public synchronized void exportFineTuned(File out) throws IOException {
    requireModel();
    requireIdle();
    JsonObject training = new JsonObject();
    training.addProperty("trainer", "android_demo");
    training.addProperty("photos", cache.size());
    training.addProperty("base_model", model.file.modelHash());
    JsonObject updates = new JsonObject();
    updates.add("training", training);
    model.file.writeFineTuned(out, labels, model.state(), updates);
  }

  /** The top-3 classes of a photo and the inference latency in milliseconds. */
  public synchronized Prediction classify(Photo photo) throws IOException {
    requireModel();
    requireIdle();
    float[] image = preprocess(photo);
    long t0 = System.nanoTime();
    float[] probs = model.predict(image);
    double ms = (System.nanoTime() - t0) / 1e6;
    Integer[] order = new Integer[probs.length];
    for (int i = 0; i < order.length; i++) {
      order[i] = i;
    }
    Arrays.sort(order, (a, b) -> Float.compare(probs[b], probs[a]));
    int k = Math.min(3, probs.length);
    List<String> top = new ArrayList<>();
    float[] p = new float[k];
    for (int i = 0; i < k; i++) {
      top.add(labels.get(order[i]));
      p[i] = probs[order[i]];
    }
    return new Prediction(top, p, ms);
  }

  public synchronized List<String> labels() {
    return labels == null ? Collections.emptyList() : Collections.unmodifiableList(new ArrayList<>(labels));
  }

  public int photos() {
    return cache == null ? 0 : cache.size();
  }

  private void requireModel() {
    if (model == null) {
      throw new TftlException("no model loaded — load a .tflite exported with python -m converters.export");
    }
  }

  private void requireIdle() {
    if (state.training) {
      throw new TftlException("training is running — cancel it or wait until it finishes");
    }
  }

  private void publish() {
    Observer o = observer;
    if (o == null) {
      return;
    }
    State s = new State();
    s.model = state.model;
    s.labels = labels();
    s.photos = new int[s.labels.size()];
    if (cache != null) {
      for (int r = 0; r < cache.size(); r++) {
        s.photos[cache.label(r)]++;
      }
    }
    s.training = state.training;
    s.epoch = state.epoch;
    s.epochs = state.epochs;
    s.step = state.step;
    s.steps = state.steps;
    s.loss = state.loss;
    s.accuracy = state.accuracy;
    s.valAccuracy = state.valAccuracy;
    s.threads = state.threads;
    s.message = state.message;
    o.onState(s);
  }

  @Override
  public void close() {
    cancel.set(true);
    worker.shutdown();
    try {
      worker.awaitTermination(30, java.util.concurrent.TimeUnit.SECONDS);
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
    }
    if (model != null) {
      model.close();
    }
  }
}

package org.tftl.app;

import com.google.gson.JsonElement;
import com.google.gson.JsonObject;
import java.io.File;
import java.io.IOException;
import java.io.InputStream;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.Comparator;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CancellationException;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.ThreadFactory;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.function.BooleanSupplier;
import org.tftl.core.Augment;
import org.tftl.core.Checkpoint;
import org.tftl.core.FeatureCache;
import org.tftl.core.Files2;
import org.tftl.core.ModelFile;
import org.tftl.core.Npy;
import org.tftl.core.Preprocess;
import org.tftl.core.SignatureInterpreter;
import org.tftl.core.Text;
import org.tftl.core.TftlException;
import org.tftl.core.TftlModel;
import org.tftl.core.Trainer;

/**
 * Everything the app's screens do, without android.*: load a model, name its classes, add and
 * delete photos (kept as trunk features, not pixels), train with progress and cancel, restore at
 * start-up, export the fine-tuned model, classify with top-3 and latency.
 *
 * <p>Every file, decode, extract and interpreter operation runs on one worker thread ({@link
 * #requireWorker} refuses any other), so the calling (UI) thread only submits work and renders
 * {@link State}. Errors land in {@link State#error}; a storage that cannot be restored lands in
 * {@link State#storageError} with {@link #recover} as the way out, never in a missing view model.
 *
 * <p>Storage (app-private folder, every file written atomically): model.tflite (the loaded
 * model, mapped by the interpreter), classes.txt, features.npz (the feature cache), photos.txt
 * (the photos' names), checkpoint.npz (tftl-train's format, every {@link #checkpointEverySteps}
 * steps and every epoch).
 */
public final class PersonalizeViewModel implements AutoCloseable {
  /** Creates the interpreter of {@code mf}, stored at {@code stored}: LiteRT's Interpreter on Android, the host backend in tests. */
  public interface InterpreterFactory {
    SignatureInterpreter create(ModelFile mf, File stored, int threads);
  }

  /** What the screens show; called on the worker thread (Activities post it to the UI thread). */
  public interface Observer {
    void onState(State state);
  }

  /** A model file to load: opened and measured on the worker thread. */
  public interface Source {
    /** The bytes, or null when there is no such file (a build without a bundled model). */
    InputStream open() throws IOException;

    /** The size in bytes, or -1 when unknown. */
    long size() throws IOException;

    String name();
  }

  /** Receives a result on the worker thread. */
  public interface Result<T> {
    void done(T value);
  }

  /** A snapshot for the UI. */
  public static final class State {
    public String model;
    public List<String> labels = Collections.emptyList();
    /** Photos per class. */
    public int[] photos = new int[0];
    /** Per photo (row): its name and class. */
    public List<String> photoNames = Collections.emptyList();
    public int[] photoLabels = new int[0];
    public boolean canUndo;
    /** What the worker does now ("adding photos", "training", ...), null when idle; done of total. */
    public String busy;
    public int done;
    public int total;
    public boolean training;
    public int epoch;
    public int epochs;
    public int step;
    public int steps;
    public double loss = Double.NaN;
    public double accuracy = Double.NaN;
    public double valAccuracy = Double.NaN;
    public int valPhotos;
    public int threads;
    /** An unfinished run that Train continues ("epoch 2 of 6, step 3"), or null. */
    public String resumable;
    public String message;
    public String error;
    /** Why the stored data could not be restored; the screen offers {@link #recover}. */
    public String storageError;
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

  /** State.busy while a training task runs. */
  static final String TRAINING = "training";
  /** The seed of the cached views' crops and of each epoch's order and view draws. */
  static final long TRAIN_SEED = 0;
  static final String MODEL = "model.tflite";
  static final String INCOMING = "incoming.tflite";
  static final String CLASSES = "classes.txt";
  static final String FEATURES = "features.npz";
  static final String PHOTOS = "photos.txt";
  /** What a model switch or a reset discards: everything the user made. */
  private static final String[] USER_DATA = {CLASSES, FEATURES, PHOTOS, Checkpoint.NAME};

  /** Checkpoint every this many steps as well as at each epoch's end. */
  public volatile int checkpointEverySteps = 10;
  /** A model file to load larger than this is refused (ModelFile's limit; tests lower it). */
  volatile long maxModelBytes = ModelFile.MAX_FILE_BYTES;
  private final File dir;
  private final InterpreterFactory factory;
  private final ExecutorService worker;
  private volatile Thread workerThread;
  private final AtomicBoolean cancel = new AtomicBoolean();
  private final List<Observer> observers = new CopyOnWriteArrayList<>();
  private final State state = new State();
  private volatile State last;
  private volatile boolean userData;
  private TftlModel model;
  private FeatureCache cache;
  private List<String> labels;
  private List<String> names = new ArrayList<>();
  private FeatureCache undoCache;
  private List<String> undoNames;

  /** Nothing is read here: {@link #restore} does it on the worker thread. */
  public PersonalizeViewModel(File storageDir, InterpreterFactory factory, int threads) {
    this.dir = storageDir;
    this.factory = factory;
    state.threads = Math.max(1, threads);
    worker = Executors.newSingleThreadExecutor(new ThreadFactory() {
      @Override
      public Thread newThread(Runnable r) {
        Thread t = new Thread(r, "tftl-worker");
        t.setDaemon(true);
        workerThread = t;
        return t;
      }
    });
  }

  /** A unit of work on the worker thread: errors (out of memory included) become State.error. */
  private abstract class Task implements Runnable {
    final String what;

    Task(String what) {
      this.what = what;
    }

    abstract void work() throws IOException;

    @Override
    public final void run() {
      state.busy = what;
      state.done = 0;
      state.total = 0;
      publish();
      try {
        work();
      } catch (CancellationException e) {
        state.message = e.getMessage();
      } catch (OutOfMemoryError e) {
        state.error = what + ": out of memory — close other apps, or use a model with a smaller image size";
      } catch (IOException | RuntimeException e) {
        state.error = what + ": " + e.getMessage();
      } finally {
        state.busy = null;
        state.training = false;
        publish();
      }
    }
  }

  private Future<?> submit(Task t) {
    State now = last;
    if (now != null && now.training) {
      throw new TftlException("training is running — cancel it or wait until it finishes");
    }
    cancel.set(false);
    state.error = null;
    return worker.submit(t);
  }

  /** Refuses to touch storage or the interpreter on any thread but the worker (the UI thread above all). */
  void requireWorker() {
    if (Thread.currentThread() != workerThread) {
      throw new IllegalStateException("storage and interpreter work runs on the worker thread, not on "
          + Thread.currentThread().getName());
    }
  }

  public void addObserver(Observer o) {
    observers.add(o);
    State s = last;
    if (s != null) {
      o.onState(s);
    }
  }

  public void removeObserver(Observer o) {
    observers.remove(o);
  }

  /** The latest snapshot (null before the first). */
  public State state() {
    return last;
  }

  /** Whether loading another model would discard photos or training (the screen asks first). */
  public boolean hasUserData() {
    return userData;
  }

  /**
   * Restores what a previous run left in the storage folder; on the very first start loads
   * {@code bundled} (may be null or absent). A failure leaves State.storageError, and the app usable.
   */
  public Future<?> restore(final Source bundled) {
    return submit(new Task("restoring your data") {
      @Override
      void work() throws IOException {
        restoreNow(bundled);
      }
    });
  }

  private void restoreNow(Source bundled) throws IOException {
    requireWorker();
    state.storageError = null;
    if (!dir.isDirectory() && !dir.mkdirs()) {
      state.storageError = "cannot create " + dir + " — free some storage, then reset";
      return;
    }
    try {
      if (new File(dir, MODEL).isFile()) {
        open();
        state.message = "restored " + cache.size() + " photos" + (new File(dir, Checkpoint.NAME).isFile()
            ? " and the trained weights" : "");
        state.resumable = describe(resumable(cache.split()[0].length));
      } else if (bundled != null) {
        install(bundled);
      }
    } catch (IOException | RuntimeException | OutOfMemoryError e) {
      closeModel();
      state.storageError = "the saved data cannot be restored (" + e.getMessage() + ")";
    }
  }

  /**
   * The way out of a storage error: discards the photos, names and training, and with
   * {@code keepModel} false the stored model too (then {@code bundled} is loaded again).
   */
  public Future<?> recover(final boolean keepModel, final Source bundled) {
    return submit(new Task("resetting") {
      @Override
      void work() throws IOException {
        requireWorker();
        closeModel();
        deleteUserData();
        if (!keepModel) {
          new File(dir, MODEL).delete();
        }
        restoreNow(bundled);
      }
    });
  }

  /**
   * Loads a model: it is copied (bounded) beside the current one and built first; only a model
   * that opens replaces the current one, and only then are the old photos and training deleted.
   * With photos or training present, {@code discardConfirmed} must say the user agreed.
   */
  public Future<?> loadModel(final Source source, boolean discardConfirmed) {
    if (userData && !discardConfirmed) {
      throw new TftlException("loading a model discards your photos and training — confirm first");
    }
    return submit(new Task("loading " + source.name()) {
      @Override
      void work() throws IOException {
        install(source);
      }
    });
  }

  private void install(Source source) throws IOException {
    requireWorker();
    File incoming = new File(dir, INCOMING);
    long size = source.size();
    if (size > maxModelBytes) {  // refused before a byte is read
      throw new TftlException(source.name() + " is " + (size >> 20) + " MiB, more than a model file can be ("
          + (maxModelBytes >> 20) + " MiB) — pick the right file");
    }
    try (InputStream in = source.open()) {
      if (in == null) {
        return;
      }
      Files2.copyBounded(in, incoming, maxModelBytes, source.name());
    }
    TftlModel next;
    ModelFile mf;
    try {
      mf = ModelFile.read(incoming);
      next = new TftlModel(mf, interpreters(incoming));
    } catch (IOException | RuntimeException | OutOfMemoryError e) {
      incoming.delete();  // the current model and data stay as they were
      throw e;
    }
    closeModel();
    deleteUserData();
    if (!incoming.renameTo(new File(dir, MODEL))) {  // the interpreter keeps its mapping across the rename
      next.close();
      throw new IOException("cannot rename " + incoming + " to " + MODEL);
    }
    model = next;
    labels = new ArrayList<>(mf.labels);
    cache = newCache();
    names = new ArrayList<>();
    undoCache = null;
    state.model = source.name();
    state.message = "loaded " + source.name();
  }

  private void deleteUserData() {
    for (String f : USER_DATA) {
      new File(dir, f).delete();
    }
  }

  private void closeModel() {
    if (model != null) {
      model.close();
    }
    model = null;
    cache = null;
    labels = null;
    names = new ArrayList<>();
    undoCache = null;
  }

  private TftlModel.Factory interpreters(final File stored) {
    final int threads = state.threads;
    return new TftlModel.Factory() {
      @Override
      public SignatureInterpreter create(ModelFile mf) {
        return factory.create(mf, stored, threads);
      }
    };
  }

  private void open() throws IOException {
    File stored = new File(dir, MODEL);
    ModelFile mf = ModelFile.read(stored);
    closeModel();
    model = new TftlModel(mf, interpreters(stored));
    state.model = state.model == null ? MODEL : state.model;
    labels = new ArrayList<>(mf.labels);
    File classes = new File(dir, CLASSES);
    if (classes.isFile()) {
      List<String> saved = lines(classes);
      if (saved.size() != mf.meta.numLabels) {
        throw new IOException(classes + " has " + saved.size() + " names, the model " + mf.meta.numLabels);
      }
      labels = new ArrayList<>(ModelFile.checkLabels(saved));
    }
    cache = newCache();
    File features = new File(dir, FEATURES);
    if (features.isFile()) {
      try {
        cache = FeatureCache.fromNpz(Files2.readFile(features, ModelFile.MAX_FILE_BYTES), model.featureElements,
            cacheViews());
      } catch (IOException | RuntimeException e) {
        throw new IOException(features.getName() + ": " + e.getMessage(), e);
      }
      for (int r = 0; r < cache.size(); r++) {
        if (cache.label(r) < 0 || cache.label(r) >= labels.size()) {
          throw new IOException(features + " holds class " + cache.label(r) + " but the model has " + labels.size());
        }
      }
    }
    File photos = new File(dir, PHOTOS);
    names = photos.isFile() ? lines(photos) : new ArrayList<String>();
    while (names.size() < cache.size()) {
      names.add("photo " + (names.size() + 1));
    }
    names = new ArrayList<>(names.subList(0, cache.size()));
    File ckpt = new File(dir, Checkpoint.NAME);
    if (ckpt.isFile()) {
      Checkpoint c = Checkpoint.load(ckpt, mf.modelHash(), labels);
      model.restore(c.state, "checkpoint " + ckpt);
    }
  }

  private static List<String> lines(File f) throws IOException {
    List<String> out = new ArrayList<>();
    for (String l : new String(Files2.readFile(f, 1 << 20), StandardCharsets.UTF_8).split("\n")) {
      if (!l.isEmpty()) {
        out.add(l);
      }
    }
    return out;
  }

  /** Renames class slot {@code slot}; the checkpoint follows the new names. Nothing is written when unchanged. */
  public Future<?> renameClass(final int slot, final String name) {
    return submit(new Task("renaming a class") {
      @Override
      void work() throws IOException {
        renameNow(slot, name.trim());
      }
    });
  }

  private void renameNow(int slot, String name) throws IOException {
    requireWorker();
    requireModel();
    if (slot < 0 || slot >= labels.size() || labels.get(slot).equals(name)) {
      return;
    }
    List<String> next = new ArrayList<>(labels);
    next.set(slot, name);
    ModelFile.checkLabels(next);
    File ckpt = new File(dir, Checkpoint.NAME);
    if (ckpt.isFile()) {
      Checkpoint c = Checkpoint.load(ckpt, model.file.modelHash(), labels);
      com.google.gson.JsonArray l = new com.google.gson.JsonArray();
      for (String n : next) {
        l.add(n);
      }
      c.meta.add("labels", l);
      c.save(ckpt);
    }
    labels = next;
    Files2.writeAtomically(new File(dir, CLASSES), (Text.join("\n", labels) + "\n").getBytes(StandardCharsets.UTF_8));
  }

  /** Views cached per photo: the centre crop (view 0, for validation), then the recipe's cache_views augmented. */
  private int cacheViews() {
    return 1 + model.file.meta.recipe.cacheViews;
  }

  private FeatureCache newCache() {
    return new FeatureCache(model.featureElements, cacheViews());
  }

  /**
   * The images cached for photo number {@code index}: its centre crop ({@link #preprocess}), then
   * the recipe's cache_views {@link Augment} views of it (seeded by TRAIN_SEED, the view and index),
   * each float32 [R, R, 3], concatenated.
   */
  float[] preprocessViews(Photo photo, int index) throws IOException {
    int size = model.imageSize;
    int views = model.file.meta.recipe.cacheViews;
    int[] full = photo.uprightSize();
    Augment.View[] vs = new Augment.View[views];
    int sample = Preprocess.draftScale(full[0], full[1], size);
    for (int v = 0; v < views; v++) {
      vs[v] = Augment.view(full[0], full[1], TRAIN_SEED, v, index);
      sample = Math.min(sample, Preprocess.draftScale(vs[v].box, size));
    }
    int r = size * size * 3;
    float[] out = new float[(views + 1) * r];
    System.arraycopy(preprocess(photo), 0, out, 0, r);
    Photo.Decoded d = photo.decode(sample);  // one decode, fine enough for every view's box
    for (int v = 0; v < views; v++) {
      float[] img = Preprocess.fromDecoded(d.rgb, d.width, d.height, vs[v].box, vs[v].flip, d.rawWidth,
          d.rawDecodedWidth, size);
      System.arraycopy(img, 0, out, (v + 1) * r, r);
    }
    return out;
  }

  /** Preprocesses a photo exactly as tftl does: float32 [R, R, 3]. */
  float[] preprocess(Photo photo) throws IOException {
    requireWorker();
    int[] full = photo.uprightSize();
    int size = model.imageSize;
    Photo.Decoded d = photo.decode(Preprocess.draftScale(full[0], full[1], size));
    return Preprocess.fromDecoded(d.rgb, d.width, d.height, full[0], full[1], d.rawWidth, d.rawDecodedWidth, size);
  }

  /**
   * Adds photos to class {@code slot}, one extract each, with progress; Cancel stops between
   * photos and keeps those added. {@code capture} (the camera's file, or null) must hold a new
   * photo, and is deleted afterwards, so a camera app that returns without writing adds nothing.
   */
  public Future<?> addPhotos(final int slot, final List<? extends Photo> photos, final File capture) {
    return submit(new Task("adding photos") {
      @Override
      void work() throws IOException {
        try {
          addNow(slot, photos, capture);
        } finally {
          if (capture != null) {
            capture.delete();
          }
        }
      }
    });
  }

  private void addNow(int slot, List<? extends Photo> photos, File capture) throws IOException {
    requireWorker();
    requireModel();
    if (slot < 0 || slot >= labels.size()) {
      throw new TftlException("class " + slot + " does not exist: the model has " + labels.size() + " classes");
    }
    if (capture != null && (!capture.isFile() || capture.length() == 0)) {
      throw new TftlException("the camera app returned without a photo — take it again");
    }
    int added = 0;
    state.total = photos.size();
    try {
      for (Photo p : photos) {
        if (cancel.get()) {
          throw new CancellationException("added " + added + " of " + photos.size() + " photos; cancelled");
        }
        cache.add(model.extract(preprocessViews(p, cache.size())), new int[] {slot});
        names.add(p.name().replace('\n', ' '));
        state.done = ++added;
        publish();
      }
      state.message = "added " + added + " photos to " + labels.get(slot);
    } finally {
      if (added > 0) {
        undoCache = null;
        saveFeatures();
      }
    }
  }

  private void saveFeatures() throws IOException {
    requireWorker();
    Files2.writeAtomically(new File(dir, FEATURES), cache.toNpz());
    Files2.writeAtomically(new File(dir, PHOTOS), (Text.join("\n", names) + "\n").getBytes(StandardCharsets.UTF_8));
  }

  /** Deletes {@code file} (the camera's capture file) on the worker thread, so no stale photo is added later. */
  public void discard(final File file) {
    worker.execute(new Runnable() {
      @Override
      public void run() {
        file.delete();
      }
    });
  }

  /** Deletes photo (row) {@code row}; {@link #undoDelete} brings it back. */
  public Future<?> deletePhoto(final int row) {
    return submit(new Task("deleting a photo") {
      @Override
      void work() throws IOException {
        requireModel();
        if (row < 0 || row >= cache.size()) {
          throw new TftlException("photo " + row + " does not exist");
        }
        int[] keep = new int[cache.size() - 1];
        for (int r = 0, k = 0; r < cache.size(); r++) {
          if (r != row) {
            keep[k++] = r;
          }
        }
        undoCache = cache;
        undoNames = new ArrayList<>(names);
        cache = cache.select(keep);
        names.remove(row);
        saveFeatures();
        state.message = "deleted " + undoNames.get(row);
      }
    });
  }

  public Future<?> undoDelete() {
    return submit(new Task("undoing the delete") {
      @Override
      void work() throws IOException {
        if (undoCache == null) {
          return;
        }
        cache = undoCache;
        names = undoNames;
        undoCache = null;
        saveFeatures();
        state.message = "photo restored";
      }
    });
  }

  /** Changes the interpreter's thread count (rebuilt only when it changes); the trained state carries over. */
  public Future<?> setThreads(final int threads) {
    return submit(new Task("changing threads") {
      @Override
      void work() throws IOException {
        int t = Math.max(1, threads);
        if (t == state.threads) {
          return;
        }
        state.threads = t;
        if (model != null) {
          Map<String, Npy.Array> weights = model.state();
          ModelFile mf = model.file;
          model.close();
          model = new TftlModel(mf, interpreters(new File(dir, MODEL)));
          model.restore(weights, "the current weights");
        }
      }
    });
  }

  /**
   * Trains on the worker thread: continues an unfinished run of the same photos with its own
   * epochs, learning rate and Adam state (so {@code epochs} may be null: after process death the
   * service resumes without asking), else starts a new run of {@code epochs} from the current
   * weights. Every FeatureCache.HOLDOUT_EVERY-th photo per class is held out for validation.
   */
  public Future<?> startTraining(final Integer epochs, final double lr) {
    return submit(new Task(TRAINING) {
      @Override
      void work() throws IOException {
        trainNow(epochs, lr);
      }
    });
  }

  private void trainNow(Integer epochs, double lr) throws IOException {
    requireWorker();
    requireModel();
    int[][] split = cache.split();
    FeatureCache train = cache.select(split[0], 1, cache.views - 1);  // the augmented views
    FeatureCache val = split[1].length == 0 ? null : cache.select(split[1], 0, 1);  // centre crops
    if (train.size() == 0) {
      throw new TftlException("no photos yet — add photos to at least one class first");
    }
    Checkpoint resume = resumable(train.size());
    // The model file's recipe (lr, epochs rule, warm-up, head_init); the given epochs and lr over it
    Trainer.Config cfg = Trainer.Config.of(model.file.meta.recipe, train.size(), model.batch);
    if (resume != null) {
      JsonObject s = resume.meta.getAsJsonObject("settings");
      cfg.epochs = s.get("epochs").getAsInt();
      cfg.lr = s.get("lr").getAsDouble();
    } else if (epochs == null) {
      state.message = "no unfinished run to continue";
      return;
    } else {
      cfg.epochs = epochs;
      cfg.lr = Double.isNaN(lr) ? cfg.lr : lr;  // NaN: the recipe's
    }
    cfg.checkpointEverySteps = checkpointEverySteps;
    cfg.seed = TRAIN_SEED;
    final Trainer trainer = new Trainer(model, labels, cfg, new File(dir, Checkpoint.NAME), resume);
    state.training = true;
    state.epochs = cfg.epochs;
    state.epoch = trainer.epoch();
    state.step = 0;
    state.loss = Double.NaN;
    state.accuracy = Double.NaN;
    state.valAccuracy = Double.NaN;
    state.valPhotos = val == null ? 0 : val.size();
    state.message = resume != null ? "continuing from epoch " + (trainer.epoch() + 1) : "training";
    publish();
    try {
      trainer.train(train, val, listener(), new BooleanSupplier() {
        @Override
        public boolean getAsBoolean() {
          return cancel.get();
        }
      });
      state.message = String.format("done: loss %.3f, training accuracy %.2f", state.loss, state.accuracy);
    } catch (CancellationException e) {
      state.message = "cancelled; Train continues where it stopped";
    } finally {
      state.training = false;
      state.resumable = describe(resumable(train.size()));
    }
  }

  private Trainer.Listener listener() {
    return new Trainer.Listener() {
      @Override
      public void onStep(int epoch, int step, int stepsPerEpoch, int globalStep, float lr, int[] rows, float loss,
          double runningLoss, double runningAccuracy) {
        state.epoch = epoch + 1;
        state.step = step + 1;
        state.steps = stepsPerEpoch;
        state.done = epoch * stepsPerEpoch + step + 1;
        state.total = state.epochs * stepsPerEpoch;
        state.loss = runningLoss;
        state.accuracy = runningAccuracy;
        publish();
      }

      @Override
      public void onEpoch(JsonObject entry) {
        JsonElement v = entry.get("val_accuracy");
        state.valAccuracy = v == null || v.isJsonNull() ? Double.NaN : v.getAsDouble();
        state.message = "epoch " + entry.get("epoch").getAsInt() + " saved";
        publish();
      }
    };
  }

  /** The stored checkpoint when it is an unfinished run over {@code trainImages} photos, else null. */
  private Checkpoint resumable(int trainImages) throws IOException {
    File ckpt = new File(dir, Checkpoint.NAME);
    if (model == null || !ckpt.isFile()) {
      return null;
    }
    Checkpoint c = Checkpoint.load(ckpt, model.file.modelHash(), labels);
    JsonObject s = c.meta.getAsJsonObject("settings");
    if (s == null || !s.has("epochs") || !s.has("lr") || !s.has("train_images")) {
      return null;
    }
    boolean unfinished = c.meta.get("epoch").getAsInt() < s.get("epochs").getAsInt()
        || c.meta.get("position").getAsInt() > 0;
    return unfinished && s.get("train_images").getAsInt() == trainImages ? c : null;
  }

  private static String describe(Checkpoint c) {
    if (c == null) {
      return null;
    }
    return "epoch " + (c.meta.get("epoch").getAsInt() + 1) + " of " + c.meta.getAsJsonObject("settings").get("epochs")
        .getAsInt() + ", step " + (c.meta.get("position").getAsInt() + 1);
  }

  /** Waits until everything submitted so far has run (tests; never called on the UI thread). */
  void awaitIdle() throws Exception {
    worker.submit(new Runnable() {
      @Override
      public void run() {
        // a barrier: the worker runs tasks in order
      }
    }).get(10, java.util.concurrent.TimeUnit.MINUTES);
  }

  /** Asks the running work (training, adding photos) to stop after the current step or photo. */
  public void cancel() {
    cancel.set(true);
  }

  /** Writes the fine-tuned model (tftl-train --output's format) to {@code out}, then calls {@code done}. */
  public Future<?> exportFineTuned(final File out, final Result<File> done) {
    return submit(new Task("writing the fine-tuned model") {
      @Override
      void work() throws IOException {
        requireWorker();
        requireModel();
        JsonObject training = new JsonObject();
        training.addProperty("trainer", "android_demo");
        training.addProperty("photos", cache.size());
        training.addProperty("base_model", model.file.modelHash());
        JsonObject updates = new JsonObject();
        updates.add("training", training);
        model.file.writeFineTuned(out, labels, model.state(), updates);
        done.done(out);
      }
    });
  }

  /** The top-3 classes of a photo and the inference latency; {@code capture} as in {@link #addPhotos}. */
  public Future<?> classify(final Photo photo, final File capture, final Result<Prediction> done) {
    return submit(new Task("classifying") {
      @Override
      void work() throws IOException {
        try {
          if (capture != null && (!capture.isFile() || capture.length() == 0)) {
            throw new TftlException("the camera app returned without a photo — take it again");
          }
          done.done(classifyNow(photo));
        } finally {
          if (capture != null) {
            capture.delete();
          }
        }
      }
    });
  }

  private Prediction classifyNow(Photo photo) throws IOException {
    requireModel();
    float[] image = preprocess(photo);
    long t0 = System.nanoTime();
    final float[] probs = model.predict(image);
    double ms = (System.nanoTime() - t0) / 1e6;
    Integer[] order = new Integer[probs.length];
    for (int i = 0; i < order.length; i++) {
      order[i] = i;
    }
    Arrays.sort(order, new Comparator<Integer>() {
      @Override
      public int compare(Integer a, Integer b) {
        return Float.compare(probs[b], probs[a]);
      }
    });
    int k = Math.min(3, probs.length);
    List<String> top = new ArrayList<>();
    float[] p = new float[k];
    for (int i = 0; i < k; i++) {
      top.add(labels.get(order[i]));
      p[i] = probs[order[i]];
    }
    return new Prediction(top, p, ms);
  }

  private void requireModel() {
    if (model == null) {
      throw new TftlException("no model loaded — load a .tflite exported with python -m converters.export");
    }
  }

  /** Builds a snapshot and hands it to every observer; on the worker thread (or before it starts). */
  private void publish() {
    State s = new State();
    s.model = state.model;
    s.labels = labels == null ? Collections.<String>emptyList() : Collections.unmodifiableList(new ArrayList<>(labels));
    s.photos = new int[s.labels.size()];
    int rows = cache == null ? 0 : cache.size();
    s.photoLabels = new int[rows];
    for (int r = 0; r < rows; r++) {
      s.photoLabels[r] = cache.label(r);
      s.photos[cache.label(r)]++;
    }
    s.photoNames = Collections.unmodifiableList(new ArrayList<>(names));
    s.canUndo = undoCache != null;
    s.busy = state.busy;
    s.done = state.done;
    s.total = state.total;
    s.training = state.training;
    s.epoch = state.epoch;
    s.epochs = state.epochs;
    s.step = state.step;
    s.steps = state.steps;
    s.loss = state.loss;
    s.accuracy = state.accuracy;
    s.valAccuracy = state.valAccuracy;
    s.valPhotos = state.valPhotos;
    s.threads = state.threads;
    s.resumable = state.resumable;
    s.message = state.message;
    s.error = state.error;
    s.storageError = state.storageError;
    userData = rows > 0 || (model != null && new File(dir, Checkpoint.NAME).isFile());
    last = s;
    for (Observer o : observers) {
      o.onState(s);
    }
  }

  @Override
  public void close() {
    cancel.set(true);
    worker.submit(new Runnable() {
      @Override
      public void run() {
        closeModel();
      }
    });
    worker.shutdown();
    try {
      worker.awaitTermination(30, java.util.concurrent.TimeUnit.SECONDS);
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
    }
  }
}

package org.tftl.app;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.File;
import java.io.FileInputStream;
import java.io.IOException;
import java.io.InputStream;
import java.nio.file.Files;
import java.nio.file.StandardCopyOption;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicReference;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.tftl.core.Checkpoint;
import org.tftl.core.FeatureCache;
import org.tftl.core.ModelFile;
import org.tftl.core.TftlException;
import org.tftl.host.LiteRtHostInterpreter;
import org.tftl.host.Work;

/**
 * The app's flows through its ViewModel on the JVM, with the real model and flowers5 photos:
 * load, rename, add photos, train with progress and validation, cancel, restart from storage,
 * continue without being told the epochs, export, classify; a process killed mid-epoch resumes
 * the same run; storage errors are recoverable; a model switch is all-or-nothing; delete and undo;
 * and nothing touches storage or the interpreter off the worker thread.
 */
class ViewModelFlowTest {
  static final List<String> CLASSES = Work.LABELS;

  /** A photo file decoded by the JDK; sampleSize keeps every n-th pixel (the phone scales in the DCT). */
  static final class HostPhoto implements Photo {
    final File file;

    HostPhoto(File file) {
      this.file = file;
    }

    @Override
    public String name() {
      return file.getName();
    }

    @Override
    public int[] uprightSize() throws IOException {
      return Work.size(file);
    }

    @Override
    public Decoded decode(int sampleSize) throws IOException {
      Work.Decoded d = Work.decode(file, sampleSize);
      return new Decoded(d.rgb, d.width, d.height, d.rawWidth, d.width);
    }
  }

  static PersonalizeViewModel.Source source(File f) {
    return new PersonalizeViewModel.Source() {
      @Override
      public InputStream open() throws IOException {
        return new FileInputStream(f);
      }

      @Override
      public long size() {
        return f.length();
      }

      @Override
      public String name() {
        return f.getName();
      }
    };
  }

  static PersonalizeViewModel.InterpreterFactory hostInterpreters() {
    return (mf, stored, threads) -> new LiteRtHostInterpreter(Work.LIB, mf.flatbuffer(), threads);
  }

  /** A view model restored from {@code dir} (as the app's start-up does), with its states recorded. */
  static PersonalizeViewModel start(File dir, List<PersonalizeViewModel.State> seen) throws Exception {
    PersonalizeViewModel vm = new PersonalizeViewModel(dir, hostInterpreters(), 1);
    vm.addObserver(seen::add);
    vm.restore(null).get(2, TimeUnit.MINUTES);
    return vm;
  }

  static List<HostPhoto> photos(String cls, int n) {
    File[] files = new File(Work.file("train"), cls).listFiles();
    Arrays.sort(files);
    List<HostPhoto> out = new ArrayList<>();
    for (File f : Arrays.asList(files).subList(0, n)) {
      out.add(new HostPhoto(f));
    }
    return out;
  }

  static void addPerClass(PersonalizeViewModel vm, int n) throws Exception {
    for (int c = 0; c < CLASSES.size(); c++) {
      vm.addPhotos(c, photos(CLASSES.get(c), n), null).get(5, TimeUnit.MINUTES);
    }
  }

  static PersonalizeViewModel.Prediction classify(PersonalizeViewModel vm, File photo) throws Exception {
    AtomicReference<PersonalizeViewModel.Prediction> out = new AtomicReference<>();
    vm.classify(new HostPhoto(photo), null, out::set).get(1, TimeUnit.MINUTES);
    assertNull(vm.state().error);
    return out.get();
  }

  static PersonalizeViewModel.State lastState(List<PersonalizeViewModel.State> seen) {
    return seen.get(seen.size() - 1);
  }

  @Test
  void collectTrainCancelRestartContinueExportClassify(@TempDir File storage, @TempDir File shared) throws Exception {
    Work.require();
    List<PersonalizeViewModel.State> seen = new CopyOnWriteArrayList<>();
    PersonalizeViewModel vm = start(storage, seen);
    vm.addPhotos(0, photos("daisy", 1), null).get();
    assertTrue(vm.state().error.contains("no model loaded"), vm.state().error);
    vm.loadModel(source(Work.file("model.tflite")), false).get();
    assertEquals(CLASSES, vm.state().labels);
    vm.renameClass(0, "my daisy").get();
    vm.renameClass(1, "my daisy").get();
    assertTrue(vm.state().error.contains("my daisy"), vm.state().error);
    assertEquals("my daisy", vm.state().labels.get(0));
    addPerClass(vm, 8);
    assertArrayEquals(new int[] {8, 8, 8, 8, 8}, vm.state().photos);
    assertTrue(seen.stream().anyMatch(s -> "adding photos".equals(s.busy) && s.done == 4 && s.total == 8),
        "photo progress reported");

    vm.startTraining(4, 1e-3).get(5, TimeUnit.MINUTES);
    PersonalizeViewModel.State done = vm.state();
    assertFalse(done.training);
    assertTrue(done.message.startsWith("done"), done.message);
    // 8 photos per class: every 5th is held out (5 of 40), so 35 train in 5 steps of 8.
    assertEquals(5, done.valPhotos);
    assertTrue(done.valAccuracy >= 0.4, "validation accuracy " + done.valAccuracy);
    assertTrue(seen.stream().anyMatch(s -> s.training && s.steps == 5 && s.epoch == 4), "progress reported");
    double firstLoss = seen.stream().filter(s -> s.training && s.epoch == 1 && s.step == 5).findFirst().get().loss;
    assertTrue(done.loss < firstLoss, "loss " + firstLoss + " -> " + done.loss);
    // The file's recipe in full: each photo's centre crop and cache_views augmented views are stored,
    // and the run records the views it trained on as tftl-train does.
    ModelFile mf = ModelFile.read(Work.file("model.tflite"));
    int views = mf.meta.recipe.cacheViews;
    FeatureCache stored = FeatureCache.fromNpz(Files.readAllBytes(new File(storage, "features.npz").toPath()),
        mf.meta.featureElements(), views + 1);
    assertEquals(40, stored.size());
    com.google.gson.JsonObject settings = Checkpoint.load(new File(storage, Checkpoint.NAME), mf.modelHash(),
        vm.state().labels).meta.getAsJsonObject("settings");
    assertTrue(settings.get("augment").getAsBoolean());
    assertEquals(views, settings.get("cache_views").getAsInt());

    // A second run of 6 epochs, cancelled after its first step: it stops at a step boundary.
    PersonalizeViewModel.Observer canceller = s -> {
      if (s.training && s.step >= 1) {
        vm.cancel();
      }
    };
    vm.addObserver(canceller);
    vm.startTraining(6, 1e-3).get(5, TimeUnit.MINUTES);
    vm.removeObserver(canceller);
    assertTrue(vm.state().message.startsWith("cancelled"), vm.state().message);
    assertEquals("epoch 1 of 6, step 2", vm.state().resumable);
    File photo = photos("roses", 9).get(8).file;
    PersonalizeViewModel.Prediction before = classify(vm, photo);
    vm.close();

    // The app restarts: storage restores the model, names, photos' features and weights, and
    // Train continues the cancelled run with its own 6 epochs (none are passed).
    List<PersonalizeViewModel.State> resumed = new CopyOnWriteArrayList<>();
    PersonalizeViewModel again = start(storage, resumed);
    assertEquals("my daisy", again.state().labels.get(0));
    assertEquals(40, again.state().photoNames.size());
    assertEquals("epoch 1 of 6, step 2", again.state().resumable);
    PersonalizeViewModel.Prediction after = classify(again, photo);
    assertEquals(before.labels, after.labels);
    assertArrayEquals(before.probabilities, after.probabilities);
    assertEquals(3, after.labels.size());
    assertTrue(after.millis > 0);
    again.startTraining(null, 0.5).get(5, TimeUnit.MINUTES);
    assertTrue(resumed.stream().anyMatch(s -> s.message != null && s.message.startsWith("continuing from epoch 1")));
    assertTrue(again.state().message.startsWith("done"), again.state().message);
    assertEquals(6, again.state().epochs);

    File out = new File(shared, "personalised.tflite");
    AtomicReference<File> written = new AtomicReference<>();
    again.exportFineTuned(out, written::set).get();
    assertEquals(out, written.get());
    ModelFile ft = ModelFile.read(out);
    assertTrue(ft.meta.trainedState);
    assertEquals("my daisy", ft.labels.get(0));
    System.out.printf("app flow: top-3 %s %s, %.1f ms; validation accuracy %.2f on %d held-out photos%n", after.labels,
        Arrays.toString(after.probabilities), after.millis, done.valAccuracy, done.valPhotos);
    again.close();
  }

  /**
   * The process dies mid-epoch (the storage is copied at that instant, from the worker thread,
   * exactly what a kill leaves): a new process resumes from the step checkpoint with the same
   * schedule and Adam state — every step it runs has the uninterrupted run's loss.
   */
  @Test
  void processDeathResumesTheSameRunFromTheStepCheckpoint(@TempDir File storage, @TempDir File killed)
      throws Exception {
    Work.require();
    List<PersonalizeViewModel.State> seen = new CopyOnWriteArrayList<>();
    PersonalizeViewModel vm = start(storage, seen);
    vm.checkpointEverySteps = 2;
    vm.loadModel(source(Work.file("model.tflite")), false).get();
    addPerClass(vm, 5);  // 25 photos: 20 train (3 steps of 8), 5 held out
    vm.addObserver(s -> {
      if (s.training && s.epoch == 1 && s.step == 3) {  // after step 3, before the epoch's checkpoint
        try {
          for (File f : storage.listFiles()) {
            Files.copy(f.toPath(), new File(killed, f.getName()).toPath(), StandardCopyOption.REPLACE_EXISTING);
          }
        } catch (IOException e) {
          throw new IllegalStateException(e);
        }
      }
    });
    vm.startTraining(2, 1e-3).get(5, TimeUnit.MINUTES);
    Map<String, Double> original = losses(seen);
    assertEquals(6, original.size());
    vm.close();

    List<PersonalizeViewModel.State> after = new CopyOnWriteArrayList<>();
    PersonalizeViewModel revived = start(killed, after);
    assertEquals("epoch 1 of 2, step 3", revived.state().resumable);  // the checkpoint of global step 2
    revived.startTraining(null, 0.5).get(5, TimeUnit.MINUTES);  // the service's restart passes no epochs
    Map<String, Double> resumed = losses(after);
    assertEquals(Arrays.asList("1/3", "2/1", "2/2", "2/3"), new ArrayList<>(resumed.keySet()));
    for (Map.Entry<String, Double> e : resumed.entrySet()) {
      assertEquals(original.get(e.getKey()), e.getValue(), "step " + e.getKey());
    }
    assertNull(revived.state().resumable);
    revived.close();
  }

  private static Map<String, Double> losses(List<PersonalizeViewModel.State> seen) {
    Map<String, Double> out = new java.util.LinkedHashMap<>();
    for (PersonalizeViewModel.State s : seen) {
      if (s.training && s.step > 0 && !Double.isNaN(s.loss)) {
        out.put(s.epoch + "/" + s.step, s.loss);
      }
    }
    return out;
  }

  /**
   * A model that fails to open replaces nothing; a switch needs confirmation when photos exist,
   * and then leaves no trace of the old photos or training. Delete and undo reach the disk.
   */
  @Test
  void modelSwitchIsAllOrNothingAndDeleteUndoes(@TempDir File storage, @TempDir File other) throws Exception {
    Work.require();
    List<PersonalizeViewModel.State> seen = new CopyOnWriteArrayList<>();
    PersonalizeViewModel vm = start(storage, seen);
    vm.loadModel(source(Work.file("model.tflite")), false).get();
    vm.addPhotos(2, photos("roses", 3), null).get();
    assertTrue(vm.hasUserData());
    assertThrows(TftlException.class, () -> vm.loadModel(source(Work.file("model.tflite")), false));

    byte[] model = Files.readAllBytes(Work.file("model.tflite").toPath());
    File broken = new File(other, "broken.tflite");
    Files.write(broken.toPath(), Arrays.copyOf(model, model.length / 2));
    vm.loadModel(source(broken), true).get();
    assertTrue(vm.state().error.contains("broken.tflite"), vm.state().error);
    assertEquals(3, vm.state().photos[2]);
    assertTrue(new File(storage, PersonalizeViewModel.FEATURES).isFile());
    assertFalse(new File(storage, PersonalizeViewModel.INCOMING).exists());
    classify(vm, photos("roses", 4).get(3).file);  // the old model still runs

    // A model file of unknown size (a compressed asset) that never ends: the copy streams through
    // one small buffer, stops at the limit, deletes its partial file and leaves the current model.
    long[] served = new long[1];
    vm.maxModelBytes = 1 << 20;
    vm.loadModel(endless("endless.tflite", served), true).get();
    vm.maxModelBytes = ModelFile.MAX_FILE_BYTES;
    assertTrue(vm.state().error.contains("endless.tflite is larger than 1 MiB — pick the right file"),
        vm.state().error);
    assertTrue(served[0] <= (1 << 20) + (1 << 16), "read " + served[0] + " bytes of an over-limit file");
    assertFalse(new File(storage, PersonalizeViewModel.INCOMING).exists());
    assertEquals(3, vm.state().photos[2]);

    // Out of memory while decoding a photo (a huge picture): one message, nothing added, and the app
    // goes on working.
    vm.addPhotos(2, Arrays.asList(new Photo() {
      @Override
      public String name() {
        return "huge.png";
      }

      @Override
      public int[] uprightSize() {
        return new int[] {12000, 9000};
      }

      @Override
      public Decoded decode(int sampleSize) {
        throw new OutOfMemoryError("Failed to allocate a 432000000 byte allocation");
      }
    }), null).get();
    assertEquals("adding photos: out of memory — close other apps, or use a model with a smaller image size",
        vm.state().error);
    assertNull(vm.state().busy);
    assertEquals(3, vm.state().photos[2]);
    classify(vm, photos("roses", 4).get(3).file);

    vm.deletePhoto(1).get();
    assertEquals(2, vm.state().photos[2]);
    assertTrue(vm.state().canUndo);
    vm.undoDelete().get();
    assertEquals(3, vm.state().photos[2]);
    String secondName = vm.state().photoNames.get(1);
    vm.deletePhoto(0).get();
    vm.close();
    PersonalizeViewModel again = start(storage, new CopyOnWriteArrayList<>());
    assertEquals(2, again.state().photos[2]);
    assertEquals(secondName, again.state().photoNames.get(0));

    again.loadModel(source(Work.file("model.tflite")), true).get();
    assertNull(again.state().error);
    assertEquals(0, again.state().photoNames.size());
    assertFalse(new File(storage, PersonalizeViewModel.FEATURES).exists());
    assertFalse(new File(storage, Checkpoint.NAME).exists());
    again.close();
  }

  /** A source that serves zeros without end, counting them; its size is unknown (-1). */
  static PersonalizeViewModel.Source endless(String name, long[] served) {
    return new PersonalizeViewModel.Source() {
      @Override
      public InputStream open() {
        return new InputStream() {
          @Override
          public int read() {
            served[0]++;
            return 0;
          }

          @Override
          public int read(byte[] b, int off, int len) {
            served[0] += len;
            return len;
          }
        };
      }

      @Override
      public long size() {
        return -1;
      }

      @Override
      public String name() {
        return name;
      }
    };
  }

  /**
   * A picked file larger than a model file can be is refused by its size, before it is opened: not
   * one byte of it is read into memory, and the message names the file and the fix.
   */
  @Test
  void oversizedModelFileIsRefusedBeforeItIsOpened(@TempDir File storage) throws Exception {
    PersonalizeViewModel vm = start(storage, new CopyOnWriteArrayList<>());
    int[] opened = new int[1];
    vm.loadModel(new PersonalizeViewModel.Source() {
      @Override
      public InputStream open() {
        opened[0]++;
        throw new AssertionError("an over-limit file was opened");
      }

      @Override
      public long size() {
        return ModelFile.MAX_FILE_BYTES + 1;
      }

      @Override
      public String name() {
        return "holiday.mp4";
      }
    }, false).get();
    assertEquals(0, opened[0]);
    assertEquals("loading holiday.mp4: holiday.mp4 is 1024 MiB, more than a model file can be (1024 MiB) — pick the "
        + "right file", vm.state().error);
    assertFalse(new File(storage, PersonalizeViewModel.INCOMING).exists());
    vm.close();
  }

  /** Unreadable storage gives a recovery state, never a dead view model; both resets lead back to a working app. */
  @Test
  void storageErrorsAreRecoverable(@TempDir File storage) throws Exception {
    Work.require();
    PersonalizeViewModel vm = start(storage, new CopyOnWriteArrayList<>());
    vm.loadModel(source(Work.file("model.tflite")), false).get();
    vm.addPhotos(0, photos("daisy", 2), null).get();
    vm.close();
    Files.write(new File(storage, PersonalizeViewModel.FEATURES).toPath(), new byte[] {1, 2, 3});
    PersonalizeViewModel broken = start(storage, new CopyOnWriteArrayList<>());
    assertNotNull(broken.state().storageError);
    assertTrue(broken.state().storageError.contains("features.npz"), broken.state().storageError);
    broken.recover(true, null).get();  // keep the model, drop the photos and training
    assertNull(broken.state().storageError);
    assertEquals(CLASSES, broken.state().labels);
    assertEquals(0, broken.state().photoNames.size());
    broken.close();

    Files.write(new File(storage, PersonalizeViewModel.MODEL).toPath(), new byte[] {9, 9, 9, 9, 9, 9, 9, 9, 9});
    PersonalizeViewModel again = start(storage, new CopyOnWriteArrayList<>());
    assertNotNull(again.state().storageError);
    again.recover(false, source(Work.file("model.tflite"))).get();  // back to the bundled model
    assertNull(again.state().storageError);
    assertEquals(CLASSES, again.state().labels);
    again.close();
  }

  /** The thread rule: storage and interpreter calls from any thread but the worker fail. */
  @Test
  void storageAndInterpreterWorkRefusesTheCallingThread(@TempDir File storage) throws Exception {
    Work.require();
    PersonalizeViewModel vm = start(storage, new CopyOnWriteArrayList<>());
    vm.loadModel(source(Work.file("model.tflite")), false).get();
    IllegalStateException e = assertThrows(IllegalStateException.class,
        () -> vm.preprocess(photos("daisy", 1).get(0)));
    assertTrue(e.getMessage().contains("worker thread"), e.getMessage());
    assertThrows(IllegalStateException.class, vm::requireWorker);
    vm.close();
  }

  /** web_demo's held-out rule: every 5th photo per class, once every class with photos has 5. */
  @Test
  void heldOutSplitIsEveryFifthPhotoPerClass() {
    FeatureCache c = new FeatureCache(1);
    int[] labels = {0, 0, 0, 0, 1, 1, 1, 1, 0, 1, 0, 0, 0, 0, 0};
    c.add(new float[labels.length], labels);
    int[][] split = c.split();
    // class 0 rows: 0,1,2,3,8,10,11,12,13,14 -> 5th and 10th are 8 and 14; class 1 rows: 4,5,6,7,9 -> 9.
    assertArrayEquals(new int[] {8, 9, 14}, split[1]);
    assertEquals(12, split[0].length);
    FeatureCache few = new FeatureCache(1);
    few.add(new float[9], new int[] {0, 0, 0, 0, 0, 1, 1, 1, 1});  // class 1 has 4: nothing held out
    assertEquals(0, few.split()[1].length);
  }
}

package org.tftl.app;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertFalse;
import static org.junit.Assert.assertNotNull;
import static org.junit.Assert.assertNull;
import static org.junit.Assert.assertTrue;
import static org.robolectric.Shadows.shadowOf;

import android.app.Activity;
import android.app.AlertDialog;
import android.app.Notification;
import android.content.ClipData;
import android.content.DialogInterface;
import android.content.Intent;
import android.graphics.Insets;
import android.net.Uri;
import android.os.Bundle;
import android.os.Looper;
import android.view.View;
import android.view.ViewGroup;
import android.view.WindowInsets;
import android.widget.Button;
import android.widget.EditText;
import android.widget.TextView;
import java.io.File;
import java.io.FileInputStream;
import java.nio.file.Files;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.EnumSet;
import java.util.List;
import java.util.Set;
import java.util.TreeSet;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.CopyOnWriteArrayList;
import org.junit.After;
import org.junit.Before;
import org.junit.Test;
import org.junit.runner.RunWith;
import org.robolectric.Robolectric;
import org.robolectric.RobolectricTestRunner;
import org.robolectric.RuntimeEnvironment;
import org.robolectric.android.controller.ActivityController;
import org.robolectric.android.controller.ServiceController;
import org.robolectric.annotation.Config;
import org.robolectric.shadows.ShadowAlertDialog;
import org.tftl.core.Blocking;
import org.tftl.host.LiteRtHostInterpreter;
import org.tftl.host.Work;

/**
 * The Activities and the training service under Robolectric (the real framework classes and the
 * app's string resources on the JVM), with the host backend in place of LiteRT's Android
 * Interpreter: load through the picker, multi-select gallery photos, a rename committed by the
 * Train tap, training in the foreground service with its notification, real recreation (rotation
 * and a new process) keeping the fields, the camera without a camera app, a stale capture, the
 * storage-error screen, the confirmation before a model switch, insets, and the inference screen.
 */
@RunWith(RobolectricTestRunner.class)
@Config(sdk = 34, application = TftlApp.class)
public class ActivityFlowTest {
  private TftlApp app;

  /**
   * The app's own guard (TftlApp.OFF_MAIN_THREAD), wrapped to record which kinds of blocking work
   * ran, and every refusal, even one the screen caught and showed as an error line.
   */
  static final class GuardRecorder implements Blocking.Guard {
    final Set<String> ran = ConcurrentHashMap.newKeySet();
    final List<String> refused = new CopyOnWriteArrayList<>();

    @Override
    public void check(Blocking.Kind kind, String what) {
      try {
        TftlApp.OFF_MAIN_THREAD.check(kind, what);
      } catch (IllegalStateException e) {
        refused.add(e.getMessage());
        throw e;
      }
      ran.add(kind == Blocking.Kind.INTERPRETER && !what.contains(" ") ? kind + " " + what : kind.toString());
    }
  }

  private final GuardRecorder guard = new GuardRecorder();

  @Before
  public void hostBackend() throws Exception {
    Work.require();
    TftlApp.interpreters = (mf, stored, threads) -> new LiteRtHostInterpreter(Work.LIB, mf.flatbuffer(), threads);
    TftlApp.guard = guard;  // installed by onCreate, as the app installs OFF_MAIN_THREAD
    app = (TftlApp) RuntimeEnvironment.getApplication();
    app.onCreate();  // a new view model with the host backend, restored from (empty) storage
    app.viewModel().awaitIdle();
  }

  /**
   * Interpreters are native: close them before the JVM exits (a multi-threaded one left open
   * crashes its exit). Then the thread rule: no flow of the test did blocking work on the main thread.
   */
  @After
  public void closeViewModel() {
    app.viewModel().close();
    TftlApp.guard = TftlApp.OFF_MAIN_THREAD;
    assertEquals("file, decode, interpreter or checkpoint work on the main thread", Collections.emptyList(),
        guard.refused);
  }

  private void settle() throws Exception {
    for (int i = 0; i < 3; i++) {
      shadowOf(Looper.getMainLooper()).idle();
      app.viewModel().awaitIdle();
    }
    shadowOf(Looper.getMainLooper()).idle();
  }

  private static List<View> all(View v, List<View> out) {
    out.add(v);
    if (v instanceof ViewGroup) {
      for (int i = 0; i < ((ViewGroup) v).getChildCount(); i++) {
        all(((ViewGroup) v).getChildAt(i), out);
      }
    }
    return out;
  }

  private static List<Button> buttons(Activity a, int text) {
    List<Button> out = new ArrayList<>();
    for (View v : all(a.getWindow().getDecorView(), new ArrayList<>())) {
      if (v instanceof Button && ((Button) v).getText().toString().equals(a.getString(text))) {
        out.add((Button) v);
      }
    }
    return out;
  }

  private static Button button(Activity a, int text) {
    List<Button> b = buttons(a, text);
    assertEquals(a.getString(text), 1, b.size());
    return b.get(0);
  }

  private static String texts(Activity a) {
    StringBuilder sb = new StringBuilder();
    for (View v : all(a.getWindow().getDecorView(), new ArrayList<>())) {
      if (v instanceof TextView && !(v instanceof Button) && v.getVisibility() == View.VISIBLE) {
        sb.append(((TextView) v).getText()).append('\n');
      }
    }
    return sb.toString();
  }

  private static Uri register(File f) throws Exception {
    Uri uri = Uri.parse("content://test/" + f.getName());
    shadowOf(RuntimeEnvironment.getApplication().getContentResolver()).registerInputStream(uri, new FileInputStream(f));
    return uri;
  }

  private static File[] photos(int cls) {
    File[] photos = new File(Work.file("train"), Work.LABELS.get(cls)).listFiles();
    Arrays.sort(photos);
    return photos;
  }

  private MainActivity loadModel(ActivityController<MainActivity> c) throws Exception {
    MainActivity main = c.get();
    main.onActivityResult(MainActivity.PICK_MODEL, Activity.RESULT_OK,
        new Intent().setData(register(Work.file("model.tflite"))));
    settle();
    assertEquals(Work.LABELS, app.viewModel().state().labels);
    return main;
  }

  /** Gallery of class {@code cls}: the picker allows several photos; three come back at once. */
  private void addThree(MainActivity main, int cls) throws Exception {
    buttons(main, R.string.gallery).get(cls).performClick();
    Intent picker = shadowOf(main).getNextStartedActivity();
    assertEquals(Intent.ACTION_OPEN_DOCUMENT, picker.getAction());
    assertTrue(picker.getBooleanExtra(Intent.EXTRA_ALLOW_MULTIPLE, false));
    File[] p = photos(cls);
    ClipData clip = ClipData.newRawUri("photos", register(p[0]));
    clip.addItem(new ClipData.Item(register(p[1])));
    clip.addItem(new ClipData.Item(register(p[2])));
    Intent result = new Intent();
    result.setClipData(clip);
    main.onActivityResult(MainActivity.PICK_PHOTO, Activity.RESULT_OK, result);
  }

  @Test
  public void loadCollectTrainInServiceRotateRestartClassify() throws Exception {
    ActivityController<MainActivity> c = Robolectric.buildActivity(MainActivity.class).setup();
    MainActivity main = loadModel(c);
    for (int cls = 0; cls < 5; cls++) {
      addThree(main, cls);
      settle();
    }
    assertEquals(15, app.viewModel().state().photoNames.size());

    // A rename typed but not committed by a focus change is committed by the Train tap.
    ((EditText) main.findViewById(MainActivity.ID_NAME)).setText("my daisy");
    ((EditText) main.findViewById(MainActivity.ID_EPOCHS)).setText("3");
    ((EditText) main.findViewById(MainActivity.ID_THREADS)).setText("2");
    button(main, R.string.train).performClick();
    Intent start = shadowOf(app).getNextStartedService();
    assertEquals(TrainingService.class.getName(), start.getComponent().getClassName());
    assertEquals(3, start.getIntExtra(TrainingService.EXTRA_EPOCHS, -1));
    ServiceController<TrainingService> service = Robolectric.buildService(TrainingService.class, start).create();
    service.startCommand(0, 1);
    Notification first = shadowOf(service.get()).getLastForegroundNotification();
    assertNotNull("a foreground notification", first);
    settle();
    assertEquals("my daisy", app.viewModel().state().labels.get(0));
    assertTrue(app.viewModel().state().message, app.viewModel().state().message.startsWith("done"));
    assertTrue(shadowOf(service.get()).isStoppedBySelf());
    assertTrue(texts(main), texts(main).contains("epoch 3/3"));
    assertTrue(texts(main), texts(main).contains(main.getString(R.string.no_validation)));

    // Share: the fine-tuned file is written on the worker, then the chooser opens on the main thread.
    button(main, R.string.share).performClick();
    settle();
    Intent chooser = shadowOf(main).getNextStartedActivity();
    while (chooser != null && !Intent.ACTION_CHOOSER.equals(chooser.getAction())) {
      chooser = shadowOf(main).getNextStartedActivity();  // past the notification permission request
    }
    assertNotNull("Share opened no chooser: " + texts(main), chooser);
    assertTrue(new File(main.getCacheDir(), PhotoProvider.SHARED_MODEL).length() > 0);

    // Rotation: Android destroys and recreates the Activity; typed fields come back by their ids.
    ((EditText) main.findViewById(MainActivity.ID_EPOCHS)).setText("7");
    ((EditText) main.findViewById(MainActivity.ID_NAME + 4)).setText("my tulips");
    RuntimeEnvironment.setQualifiers("+land");
    c.recreate();
    settle();
    MainActivity rotated = c.get();
    assertTrue(rotated != main);
    assertEquals("7", ((EditText) rotated.findViewById(MainActivity.ID_EPOCHS)).getText().toString());
    assertEquals("my tulips", ((EditText) rotated.findViewById(MainActivity.ID_NAME + 4)).getText().toString());
    assertEquals("my daisy", ((EditText) rotated.findViewById(MainActivity.ID_NAME)).getText().toString());
    assertEquals(5, buttons(rotated, R.string.camera).size());

    // Process death: the saved instance state outlives a new Application; storage restores the rest.
    Bundle saved = new Bundle();
    c.saveInstanceState(saved).pause().stop().destroy();
    app.onCreate();
    settle();
    ActivityController<MainActivity> revived = Robolectric.buildActivity(MainActivity.class).setup(saved);
    settle();
    MainActivity fresh = revived.get();
    assertEquals("my tulips", ((EditText) fresh.findViewById(MainActivity.ID_NAME + 4)).getText().toString());
    assertEquals("2", ((EditText) fresh.findViewById(MainActivity.ID_THREADS)).getText().toString());
    assertEquals(15, app.viewModel().state().photoNames.size());
    assertEquals("my daisy", app.viewModel().state().labels.get(0));

    InferenceActivity inference = Robolectric.buildActivity(InferenceActivity.class).setup().get();
    File roses = new File(Work.file("val"), "roses");
    inference.classify(register(new File(roses, roses.list()[0])), null);
    settle();
    String shown = inference.shown();
    assertTrue(shown, shown.startsWith("1. ") && shown.contains("2. ") && shown.contains("3. ") && shown.endsWith("ms"));
    System.out.println("robolectric inference screen:\n" + shown);

    // The flows above went through the guard, each kind of blocking work, off the main thread.
    Set<String> want = new TreeSet<>();
    for (Blocking.Kind k : EnumSet.allOf(Blocking.Kind.class)) {
      want.add(k.toString());
    }
    for (String sig : Arrays.asList("extract", "train_features", "save", "restore", "infer")) {
      want.add("INTERPRETER " + sig);
    }
    want.removeAll(guard.ran);
    assertEquals("blocking work the flows never reported to the guard", Collections.emptySet(), want);
  }

  /** The app's guard refuses the main (looper) thread and lets any other thread block. */
  @Test
  public void appGuardRefusesOnlyTheMainThread() throws Exception {
    assertTrue(Looper.getMainLooper().isCurrentThread());  // Robolectric runs the test on the main looper's thread
    try {
      TftlApp.OFF_MAIN_THREAD.check(Blocking.Kind.FILE, "reading x");
      throw new AssertionError("the main thread was allowed to read a file");
    } catch (IllegalStateException e) {
      assertTrue(e.getMessage(), e.getMessage().contains("main thread"));
    }
    List<Throwable> failed = new CopyOnWriteArrayList<>();
    Thread worker = new Thread(() -> {
      try {
        TftlApp.OFF_MAIN_THREAD.check(Blocking.Kind.INTERPRETER, "extract");
      } catch (RuntimeException e) {
        failed.add(e);
      }
    });
    worker.start();
    worker.join();
    assertEquals(Collections.emptyList(), failed);
    assertTrue(Blocking.installed() == guard);  // what TftlApp.onCreate installed
  }

  @Test
  public void cameraWithoutCameraAppAndStaleCaptureAddNothing() throws Exception {
    MainActivity main = loadModel(Robolectric.buildActivity(MainActivity.class).setup());
    shadowOf(app).checkActivities(true);  // unresolvable intents throw, as on a phone
    buttons(main, R.string.camera).get(0).performClick();
    assertTrue(texts(main), texts(main).contains(main.getString(R.string.no_camera)));

    // A capture file left from before: the Camera tap discards it, so an OK without a new photo adds nothing.
    File capture = Ui.captureFile(main);
    Files.write(capture.toPath(), Files.readAllBytes(photos(0)[0].toPath()));
    shadowOf(app).checkActivities(false);
    buttons(main, R.string.camera).get(0).performClick();
    settle();
    assertFalse(capture.exists());
    main.onActivityResult(MainActivity.TAKE_PHOTO, Activity.RESULT_OK, null);
    settle();
    assertEquals(0, app.viewModel().state().photoNames.size());
    assertTrue(texts(main), texts(main).contains("the camera app returned without a photo"));
  }

  @Test
  public void storageErrorScreenResetsAndModelSwitchAsksFirst() throws Exception {
    MainActivity main = loadModel(Robolectric.buildActivity(MainActivity.class).setup());
    addThree(main, 1);
    settle();
    // Another model over photos: a confirmation first; Cancel keeps everything.
    main.onActivityResult(MainActivity.PICK_MODEL, Activity.RESULT_OK,
        new Intent().setData(register(Work.file("model.tflite"))));
    AlertDialog dialog = ShadowAlertDialog.getLatestAlertDialog();
    assertNotNull(dialog);
    dialog.getButton(DialogInterface.BUTTON_NEGATIVE).performClick();
    settle();
    assertEquals(3, app.viewModel().state().photoNames.size());

    // Broken storage: the app starts into the recovery panel, and its reset leads back to work.
    Files.write(new File(new File(app.getFilesDir(), "tftl"), PersonalizeViewModel.FEATURES).toPath(), new byte[] {1});
    app.onCreate();
    settle();
    MainActivity broken = Robolectric.buildActivity(MainActivity.class).setup().get();
    settle();
    assertTrue(texts(broken), texts(broken).contains(broken.getString(R.string.storage_error_title)));
    assertFalse(button(broken, R.string.train).isEnabled());
    button(broken, R.string.reset_keep_model).performClick();
    settle();
    assertNull(app.viewModel().state().storageError);
    assertFalse(texts(broken).contains(broken.getString(R.string.storage_error_title)));
    assertEquals(5, buttons(broken, R.string.camera).size());
  }

  /**
   * The service's notification has progress and Cancel; Cancel stops the run at a step, and when
   * Android restarts the service without its intent (after killing the process) it continues
   * that run with the run's own epochs.
   */
  @Test
  public void serviceCancelsFromItsNotificationAndResumesWithoutItsIntent() throws Exception {
    loadModel(Robolectric.buildActivity(MainActivity.class).setup());
    PersonalizeViewModel vm = app.viewModel();
    for (int cls = 0; cls < 2; cls++) {
      List<ViewModelFlowTest.HostPhoto> p = new ArrayList<>();
      for (File f : Arrays.copyOf(photos(cls), 6)) {
        p.add(new ViewModelFlowTest.HostPhoto(f));
      }
      vm.addPhotos(cls, p, null).get();
    }
    List<PersonalizeViewModel.State> seen = new java.util.concurrent.CopyOnWriteArrayList<>();
    vm.addObserver(seen::add);
    Intent start = new Intent(app, TrainingService.class).putExtra(TrainingService.EXTRA_EPOCHS, 3);
    ServiceController<TrainingService> service = Robolectric.buildService(TrainingService.class, start).create();
    PersonalizeViewModel.Observer cancelAtStep1 = st -> {
      if (st.training && st.step == 1) {
        vm.cancel();  // what the service does on ACTION_CANCEL, the notification's Cancel
      }
    };
    vm.addObserver(cancelAtStep1);
    service.startCommand(0, 1);
    Notification n = shadowOf(service.get()).getLastForegroundNotification();  // before its stopForeground
    settle();
    vm.removeObserver(cancelAtStep1);
    assertTrue(vm.state().message, vm.state().message.startsWith("cancelled"));
    assertNotNull(n);
    assertEquals(app.getString(R.string.cancel), n.actions[0].title.toString());
    Intent cancel = shadowOf(n.actions[0].actionIntent).getSavedIntent();
    assertEquals(TrainingService.ACTION_CANCEL, cancel.getAction());
    assertEquals(TrainingService.class.getName(), cancel.getComponent().getClassName());
    assertTrue(shadowOf(service.get()).isStoppedBySelf());

    ServiceController<TrainingService> restarted = Robolectric.buildService(TrainingService.class, null).create();
    restarted.get().onStartCommand(null, 0, 3);  // START_STICKY's restart: no intent, no epochs
    settle();
    assertTrue(seen.stream().anyMatch(st -> st.message != null && st.message.startsWith("continuing from epoch 1")));
    assertTrue(vm.state().message, vm.state().message.startsWith("done"));
    assertEquals(3, vm.state().epochs);
  }

  @Test
  public void contentIsPaddedByTheSystemBars() {
    MainActivity main = Robolectric.buildActivity(MainActivity.class).setup().get();
    View root = ((ViewGroup) main.findViewById(android.R.id.content)).getChildAt(0);
    WindowInsets insets = new WindowInsets.Builder()
        .setInsets(WindowInsets.Type.systemBars(), Insets.of(0, 63, 0, 126)).build();
    root.dispatchApplyWindowInsets(insets);
    assertEquals(63, root.getPaddingTop());
    assertEquals(126, root.getPaddingBottom());
  }
}

package org.tftl.app;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertFalse;
import static org.junit.Assert.assertTrue;
import static org.junit.Assume.assumeTrue;
import static org.robolectric.Shadows.shadowOf;

import android.app.Activity;
import android.content.Intent;
import android.net.Uri;
import android.os.Looper;
import android.view.View;
import android.view.ViewGroup;
import android.widget.Button;
import android.widget.LinearLayout;
import android.widget.TextView;
import java.io.File;
import java.io.FileInputStream;
import java.util.ArrayList;
import java.util.List;
import org.junit.Test;
import org.junit.runner.RunWith;
import org.robolectric.Robolectric;
import org.robolectric.RobolectricTestRunner;
import org.robolectric.RuntimeEnvironment;
import org.robolectric.android.controller.ActivityController;
import org.robolectric.annotation.Config;
import org.tftl.host.LiteRtHostInterpreter;
import org.tftl.host.Work;

/**
 * The Activities under Robolectric (the real framework classes on the JVM), with the host
 * backend in place of LiteRT's Android Interpreter: load a model through the picker result,
 * add gallery photos with the Gallery buttons, train with the Train button, rotate, classify.
 */
@RunWith(RobolectricTestRunner.class)
@Config(sdk = 34, application = TftlApp.class, manifest = Config.NONE)
public class ActivityFlowTest {
  private static void idle() {
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

  private static Button button(Activity a, String text) {
    for (View v : all(a.getWindow().getDecorView(), new ArrayList<>())) {
      if (v instanceof Button && ((Button) v).getText().toString().equals(text)) {
        return (Button) v;
      }
    }
    throw new AssertionError("no button " + text);
  }

  private static Uri register(File f) throws Exception {
    Uri uri = Uri.parse("content://test/" + f.getName());
    shadowOf(RuntimeEnvironment.getApplication().getContentResolver()).registerInputStream(uri, new FileInputStream(f));
    return uri;
  }

  @Test
  public void loadCollectTrainRotateClassify() throws Exception {
    assumeTrue(Work.DIR.isDirectory() && new File(Work.LIB).isFile());
    TftlApp.interpreters = (fb, threads) -> new LiteRtHostInterpreter(Work.LIB, fb, threads);
    TftlApp app = (TftlApp) RuntimeEnvironment.getApplication();
    app.onCreate();
    ActivityController<MainActivity> c = Robolectric.buildActivity(MainActivity.class).setup();
    MainActivity main = c.get();
    main.onActivityResult(MainActivity.PICK_MODEL, Activity.RESULT_OK,
        new Intent().setData(register(Work.file("model.tflite"))));
    idle();
    assertEquals(Work.LABELS, app.viewModel().labels());
    for (int cls = 0; cls < 5; cls++) {
      File[] photos = new File(Work.file("train"), Work.LABELS.get(cls)).listFiles();
      java.util.Arrays.sort(photos);
      for (int k = 0; k < 3; k++) {
        List<View> views = all(main.getWindow().getDecorView(), new ArrayList<>());
        int seen = -1;
        for (View v : views) {  // the Gallery button of row `cls`
          if (v instanceof Button && ((Button) v).getText().toString().equals("Gallery") && ++seen == cls) {
            v.performClick();
          }
        }
        Intent picker = shadowOf(main).getNextStartedActivity();
        assertEquals(Intent.ACTION_OPEN_DOCUMENT, picker.getAction());
        main.onActivityResult(MainActivity.PICK_PHOTO, Activity.RESULT_OK, new Intent().setData(register(photos[k])));
      }
    }
    idle();
    assertEquals(15, app.viewModel().photos());
    button(main, "Train").performClick();
    long deadline = System.currentTimeMillis() + 120_000;
    String status = "";
    while (System.currentTimeMillis() < deadline) {
      idle();
      List<View> views = all(main.getWindow().getDecorView(), new ArrayList<>());
      boolean training = views.stream().anyMatch(v -> v instanceof Button && ((Button) v).getText().toString().equals("Cancel"));
      for (View v : views) {
        if (v instanceof TextView && !(v instanceof Button) && ((TextView) v).getText().toString().contains("epoch")) {
          status = ((TextView) v).getText().toString();
        }
      }
      if (!training && status.contains("done")) {
        break;
      }
      Thread.sleep(200);
    }
    assertTrue(status, status.contains("done"));
    c.configurationChange();  // rotation: a new Activity shows the same model and photos
    idle();
    MainActivity rotated = c.get();
    int rows = ((LinearLayout) all(rotated.getWindow().getDecorView(), new ArrayList<>()).stream()
        .filter(v -> v instanceof LinearLayout && ((LinearLayout) v).getChildCount() == 5).findFirst().get()).getChildCount();
    assertEquals(5, rows);
    InferenceActivity inference = Robolectric.buildActivity(InferenceActivity.class).setup().get();
    String shown = inference.format(register(new File(new File(Work.file("val"), "roses"),
        new File(Work.file("val"), "roses").list()[0])));
    assertTrue(shown, shown.startsWith("1. ") && shown.contains("2. ") && shown.contains("3. ") && shown.endsWith("ms"));
    assertFalse(shown.contains("null"));
    System.out.println("robolectric inference screen:\n" + shown);
  }
}

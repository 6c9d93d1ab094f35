package org.tftl.app;

import android.app.Activity;
import android.content.Intent;
import android.net.Uri;
import android.os.Bundle;
import android.provider.MediaStore;
import android.text.InputType;
import android.view.View;
import android.widget.Button;
import android.widget.EditText;
import android.widget.LinearLayout;
import android.widget.ProgressBar;
import android.widget.ScrollView;
import android.widget.TextView;
import android.widget.Toast;
import java.io.File;
import java.io.InputStream;
import java.util.ArrayList;
import java.util.List;

/**
 * The personalisation screen: load a model, name its classes, add photos per class from the
 * camera or the gallery, train in the background (epochs, threads, progress, cancel), share the
 * fine-tuned model, and open the inference screen. Views are built in code (no resources), so
 * the screen compiles without the Android resource compiler.
 */
public final class MainActivity extends Activity implements PersonalizeViewModel.Observer {
  static final int PICK_MODEL = 1;
  static final int PICK_PHOTO = 2;
  static final int TAKE_PHOTO = 3;
  private PersonalizeViewModel vm;
  private LinearLayout classes;
  private TextView status;
  private ProgressBar progress;
  private EditText epochs;
  private EditText threads;
  private Button train;
  private int pendingSlot = -1;
  private final List<EditText> names = new ArrayList<>();

  @Override
  protected void onCreate(Bundle saved) {
    super.onCreate(saved);
    TftlApp app = (TftlApp) getApplication();
    vm = app.viewModel();
    if (saved != null) {
      pendingSlot = saved.getInt("slot", -1);
    }
    LinearLayout root = new LinearLayout(this);
    root.setOrientation(LinearLayout.VERTICAL);
    root.addView(button("Load model…", v -> pick(PICK_MODEL, "*/*")));
    classes = new LinearLayout(this);
    classes.setOrientation(LinearLayout.VERTICAL);
    root.addView(classes);
    epochs = field("epochs (empty: the model's recipe)", "");
    threads = field("threads", "4");
    root.addView(epochs);
    root.addView(threads);
    train = button("Train", v -> toggleTraining());
    root.addView(train);
    progress = new ProgressBar(this, null, android.R.attr.progressBarStyleHorizontal);
    root.addView(progress);
    status = new TextView(this);
    root.addView(status);
    root.addView(button("Share fine-tuned model", v -> share()));
    root.addView(button("Classify a photo", v -> startActivity(new Intent(this, InferenceActivity.class))));
    ScrollView scroll = new ScrollView(this);
    scroll.addView(root);
    setContentView(scroll);
    if (vm == null) {
      status.setText(app.startupError());
    }
  }

  @Override
  protected void onStart() {
    super.onStart();
    if (vm != null) {
      vm.setObserver(this);
    }
  }

  @Override
  protected void onStop() {
    if (vm != null) {
      vm.setObserver(null);
    }
    super.onStop();
  }

  @Override
  protected void onSaveInstanceState(Bundle out) {
    super.onSaveInstanceState(out);
    out.putInt("slot", pendingSlot);
  }

  private Button button(String text, View.OnClickListener l) {
    Button b = new Button(this);
    b.setText(text);
    b.setOnClickListener(l);
    return b;
  }

  private EditText field(String hint, String value) {
    EditText e = new EditText(this);
    e.setHint(hint);
    e.setText(value);
    e.setInputType(InputType.TYPE_CLASS_NUMBER);
    return e;
  }

  private void pick(int request, String type) {
    Intent i = new Intent(Intent.ACTION_OPEN_DOCUMENT).addCategory(Intent.CATEGORY_OPENABLE).setType(type);
    startActivityForResult(i, request);
  }

  private void capture(int slot) {
    pendingSlot = slot;
    Intent i = new Intent(MediaStore.ACTION_IMAGE_CAPTURE);
    i.putExtra(MediaStore.EXTRA_OUTPUT, PhotoProvider.uri(PhotoProvider.CAPTURE));
    i.addFlags(Intent.FLAG_GRANT_WRITE_URI_PERMISSION | Intent.FLAG_GRANT_READ_URI_PERMISSION);
    startActivityForResult(i, TAKE_PHOTO);
  }

  @Override
  protected void onActivityResult(int request, int result, Intent data) {
    if (result != RESULT_OK) {
      return;
    }
    try {
      if (request == PICK_MODEL && data != null) {
        Uri uri = data.getData();
        try (InputStream in = getContentResolver().openInputStream(uri)) {
          vm.loadModel(org.tftl.core.Files2.readBounded(in, org.tftl.core.ModelFile.MAX_FILE_BYTES, uri.toString()),
              uri.getLastPathSegment());
        }
      } else if (request == PICK_PHOTO && data != null) {
        vm.addPhoto(pendingSlot, new AndroidPhoto(getContentResolver(), data.getData()));
      } else if (request == TAKE_PHOTO) {
        vm.addPhoto(pendingSlot, new AndroidPhoto(getContentResolver(), PhotoProvider.uri(PhotoProvider.CAPTURE)));
      }
    } catch (Exception e) {
      Toast.makeText(this, e.getMessage(), Toast.LENGTH_LONG).show();
    }
  }

  private void toggleTraining() {
    try {
      if (train.getText().toString().equals("Cancel")) {
        vm.cancelTraining();
        return;
      }
      int t = Integer.parseInt(threads.getText().toString());
      getSharedPreferences(TftlApp.PREFS, MODE_PRIVATE).edit().putInt("threads", t).apply();
      vm.setThreads(t);
      String e = epochs.getText().toString().trim();
      vm.startTraining(e.isEmpty() ? null : Integer.valueOf(e), null);  // null: the recipe's epochs, lr
    } catch (Exception e) {
      Toast.makeText(this, e.getMessage(), Toast.LENGTH_LONG).show();
    }
  }

  private void share() {
    try {
      File out = new File(getCacheDir(), PhotoProvider.SHARED_MODEL);
      vm.exportFineTuned(out);
      Intent send = new Intent(Intent.ACTION_SEND).setType("application/octet-stream")
          .putExtra(Intent.EXTRA_STREAM, PhotoProvider.uri(PhotoProvider.SHARED_MODEL))
          .addFlags(Intent.FLAG_GRANT_READ_URI_PERMISSION);
      startActivity(Intent.createChooser(send, "Share the fine-tuned model"));
    } catch (Exception e) {
      Toast.makeText(this, e.getMessage(), Toast.LENGTH_LONG).show();
    }
  }

  @Override
  public void onState(PersonalizeViewModel.State s) {
    runOnUiThread(() -> render(s));
  }

  private void render(PersonalizeViewModel.State s) {
    if (names.size() != s.labels.size()) {
      rebuildClasses(s.labels);
    }
    for (int i = 0; i < s.labels.size(); i++) {
      ((TextView) ((LinearLayout) classes.getChildAt(i)).getChildAt(1)).setText(s.photos[i] + " photos");
    }
    train.setText(s.training ? "Cancel" : "Train");
    progress.setMax(Math.max(1, s.epochs * Math.max(1, s.steps)));
    progress.setProgress(Math.max(0, (s.epoch - 1) * s.steps + s.step));
    status.setText((s.model == null ? "no model" : s.model) + "\n"
        + (Double.isNaN(s.loss) ? "" : String.format("epoch %d/%d  step %d/%d  loss %.3f  accuracy %.2f%n", s.epoch,
        s.epochs, s.step, s.steps, s.loss, s.accuracy))
        + (s.message == null ? "" : s.message));
  }

  private void rebuildClasses(List<String> labels) {
    classes.removeAllViews();
    names.clear();
    for (int i = 0; i < labels.size(); i++) {
      final int slot = i;
      LinearLayout row = new LinearLayout(this);
      EditText name = new EditText(this);
      name.setText(labels.get(i));
      name.setOnFocusChangeListener((v, focused) -> {
        if (!focused) {
          try {
            vm.renameClass(slot, name.getText().toString());
          } catch (Exception e) {
            Toast.makeText(this, e.getMessage(), Toast.LENGTH_LONG).show();
            name.setText(vm.labels().get(slot));
          }
        }
      });
      row.addView(name);
      row.addView(new TextView(this));
      row.addView(button("Camera", v -> capture(slot)));
      row.addView(button("Gallery", v -> {
        pendingSlot = slot;
        pick(PICK_PHOTO, "image/*");
      }));
      classes.addView(row);
      names.add(name);
    }
  }
}

package org.tftl.app;

import android.Manifest;
import android.app.Activity;
import android.app.AlertDialog;
import android.content.ClipData;
import android.content.DialogInterface;
import android.content.Intent;
import android.content.pm.PackageManager;
import android.net.Uri;
import android.os.Build;
import android.os.Bundle;
import android.text.InputType;
import android.view.View;
import android.widget.Button;
import android.widget.EditText;
import android.widget.LinearLayout;
import android.widget.ProgressBar;
import android.widget.ScrollView;
import android.widget.TextView;
import java.io.File;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;

/**
 * The personalisation screen: load a model, name its classes, add photos per class (camera, or
 * several at once from the gallery), list and delete them (with undo), train in a foreground
 * service (epochs, threads, progress, cancel), share the fine-tuned model, open the inference
 * screen. Views are built in code; their texts are string resources. The screen only submits
 * work to the view model and renders its State: nothing here reads a file or runs the model.
 */
public final class MainActivity extends Activity implements PersonalizeViewModel.Observer {
  static final int PICK_MODEL = 1;
  static final int PICK_PHOTO = 2;
  static final int TAKE_PHOTO = 3;
  /** View ids, so that Android saves and restores the fields' text across recreation. */
  static final int ID_EPOCHS = 1001;
  static final int ID_THREADS = 1002;
  static final int ID_NAME = 1100;
  static final double LEARNING_RATE = Double.NaN;  // the model file's recipe (tftl.json)
  private PersonalizeViewModel vm;
  private TftlApp app;
  private TextView error;
  private LinearLayout recovery;
  private TextView recoveryText;
  private TextView busyText;
  private ProgressBar progress;
  private Button cancel;
  private LinearLayout classes;
  private LinearLayout photoList;
  private Button undo;
  private EditText epochs;
  private EditText threads;
  private Button train;
  private TextView status;
  private final List<Button> actions = new ArrayList<>();
  private final List<EditText> names = new ArrayList<>();
  private List<String> shownLabels = Collections.emptyList();
  private PersonalizeViewModel.State current;
  private int pendingSlot = -1;
  private int expandedSlot = -1;
  private Uri pendingModel;

  @Override
  protected void onCreate(Bundle saved) {
    super.onCreate(saved);
    app = (TftlApp) getApplication();
    vm = app.viewModel();
    if (saved != null) {
      pendingSlot = saved.getInt("slot", -1);
      expandedSlot = saved.getInt("expanded", -1);
      String m = saved.getString("pendingModel");
      pendingModel = m == null ? null : Uri.parse(m);
    }
    LinearLayout root = new LinearLayout(this);
    root.setOrientation(LinearLayout.VERTICAL);
    error = Ui.errorLine(this);
    root.addView(error);
    root.addView(recoveryPanel());
    root.addView(busyRow());
    root.addView(action(R.string.load_model, new View.OnClickListener() {
      @Override
      public void onClick(View v) {
        commitNames();
        Ui.pick(MainActivity.this, PICK_MODEL, "*/*", false, error);
      }
    }));
    classes = new LinearLayout(this);
    classes.setOrientation(LinearLayout.VERTICAL);
    root.addView(classes);
    photoList = new LinearLayout(this);
    photoList.setOrientation(LinearLayout.VERTICAL);
    root.addView(photoList);
    undo = action(R.string.undo_delete, new View.OnClickListener() {
      @Override
      public void onClick(View v) {
        submit(new Runnable() {
          @Override
          public void run() {
            vm.undoDelete();
          }
        });
      }
    });
    root.addView(undo);
    root.addView(trainingPanel());
    root.addView(action(R.string.share, new View.OnClickListener() {
      @Override
      public void onClick(View v) {
        share();
      }
    }));
    root.addView(action(R.string.classify, new View.OnClickListener() {
      @Override
      public void onClick(View v) {
        commitNames();
        startActivity(new Intent(MainActivity.this, InferenceActivity.class));
      }
    }));
    ScrollView scroll = new ScrollView(this);
    scroll.addView(root);
    Ui.applyInsets(scroll);
    setContentView(scroll);
  }

  private View recoveryPanel() {
    recovery = new LinearLayout(this);
    recovery.setOrientation(LinearLayout.VERTICAL);
    recoveryText = new TextView(this);
    recovery.addView(recoveryText);
    recovery.addView(Ui.button(this, R.string.reset_keep_model, new View.OnClickListener() {
      @Override
      public void onClick(View v) {
        vm.recover(true, app.bundledModel());
      }
    }));
    recovery.addView(Ui.button(this, R.string.reset_all, new View.OnClickListener() {
      @Override
      public void onClick(View v) {
        vm.recover(false, app.bundledModel());
      }
    }));
    recovery.setVisibility(View.GONE);
    return recovery;
  }

  private View busyRow() {
    LinearLayout row = new LinearLayout(this);
    row.setOrientation(LinearLayout.VERTICAL);
    busyText = new TextView(this);
    progress = new ProgressBar(this, null, android.R.attr.progressBarStyleHorizontal);
    cancel = Ui.button(this, R.string.cancel, new View.OnClickListener() {
      @Override
      public void onClick(View v) {
        vm.cancel();
      }
    });
    row.addView(busyText);
    row.addView(progress);
    row.addView(cancel);
    return row;
  }

  private View trainingPanel() {
    LinearLayout p = new LinearLayout(this);
    p.setOrientation(LinearLayout.VERTICAL);
    epochs = field(ID_EPOCHS, R.string.epochs, "10");
    threads = field(ID_THREADS, R.string.threads, Integer.toString(app.threads()));
    p.addView(epochs);
    p.addView(threads);
    train = action(R.string.train, new View.OnClickListener() {
      @Override
      public void onClick(View v) {
        startTraining();
      }
    });
    p.addView(train);
    status = new TextView(this);
    p.addView(status);
    return p;
  }

  private Button action(int text, View.OnClickListener l) {
    Button b = Ui.button(this, text, l);
    actions.add(b);
    return b;
  }

  private EditText field(int id, int hint, String value) {
    EditText e = new EditText(this);
    e.setId(id);
    e.setHint(hint);
    e.setText(value);
    e.setInputType(InputType.TYPE_CLASS_NUMBER);
    return e;
  }

  @Override
  protected void onStart() {
    super.onStart();
    vm.addObserver(this);
  }

  @Override
  protected void onStop() {
    commitNames();
    vm.removeObserver(this);
    super.onStop();
  }

  @Override
  protected void onSaveInstanceState(Bundle out) {
    super.onSaveInstanceState(out);
    out.putInt("slot", pendingSlot);
    out.putInt("expanded", expandedSlot);
    if (pendingModel != null) {
      out.putString("pendingModel", pendingModel.toString());
    }
  }

  /** Runs a view-model call; a refusal (training runs, confirmation missing) shows on the error line. */
  private void submit(Runnable r) {
    try {
      r.run();
    } catch (RuntimeException e) {
      Ui.showError(error, e.getMessage());
    }
  }

  /** Saves edited class names; called before every action and when the screen goes away. */
  void commitNames() {
    for (int i = 0; i < names.size() && i < shownLabels.size(); i++) {
      final int slot = i;
      final String text = names.get(i).getText().toString().trim();
      if (!text.equals(shownLabels.get(i))) {
        submit(new Runnable() {
          @Override
          public void run() {
            vm.renameClass(slot, text);
          }
        });
      }
    }
  }

  private void startTraining() {
    commitNames();
    if (current != null && current.training) {
      vm.cancel();
      return;
    }
    Integer e = number(epochs, R.string.epochs, 1000);
    Integer t = number(threads, R.string.threads, 16);
    if (e == null || t == null) {
      return;
    }
    getSharedPreferences(TftlApp.PREFS, MODE_PRIVATE).edit().putInt(TftlApp.THREADS, t).apply();
    if (Build.VERSION.SDK_INT >= 33 && checkSelfPermission(Manifest.permission.POST_NOTIFICATIONS)
        != PackageManager.PERMISSION_GRANTED) {
      requestPermissions(new String[] {Manifest.permission.POST_NOTIFICATIONS}, 0);  // progress in the shade
    }
    try {
      vm.setThreads(t);
      TrainingService.start(this, current != null && current.resumable != null ? null : e, LEARNING_RATE);
    } catch (RuntimeException ex) {
      Ui.showError(error, ex.getMessage());
    }
  }

  private Integer number(EditText field, int name, int max) {
    try {
      int v = Integer.parseInt(field.getText().toString().trim());
      if (v >= 1 && v <= max) {
        return v;
      }
    } catch (NumberFormatException ignored) {
      // falls through to the message
    }
    Ui.showError(error, getString(R.string.bad_number, getString(name), max));
    field.requestFocus();
    return null;
  }

  private void share() {
    commitNames();
    File out = new File(getCacheDir(), PhotoProvider.SHARED_MODEL);
    submit(new Runnable() {
      @Override
      public void run() {
        vm.exportFineTuned(out, new PersonalizeViewModel.Result<File>() {
          @Override
          public void done(File value) {
            runOnUiThread(new Runnable() {
              @Override
              public void run() {
                Intent send = new Intent(Intent.ACTION_SEND).setType("application/octet-stream")
                    .putExtra(Intent.EXTRA_STREAM, PhotoProvider.uri(PhotoProvider.SHARED_MODEL))
                    .addFlags(Intent.FLAG_GRANT_READ_URI_PERMISSION);
                startActivity(Intent.createChooser(send, getString(R.string.share_title)));
              }
            });
          }
        });
      }
    });
  }

  @Override
  protected void onActivityResult(int request, int result, Intent data) {
    if (request == TAKE_PHOTO && result != RESULT_OK) {
      vm.discard(Ui.captureFile(this));  // a cancelled capture must not be added later
      return;
    }
    if (result != RESULT_OK) {
      return;
    }
    if (request == PICK_MODEL && data != null && data.getData() != null) {
      pendingModel = data.getData();
      if (vm.hasUserData()) {
        confirmLoad();
      } else {
        loadPending(false);
      }
    } else if (request == PICK_PHOTO && data != null) {
      final List<AndroidPhoto> photos = new ArrayList<>();
      ClipData clip = data.getClipData();
      if (clip != null) {
        for (int i = 0; i < clip.getItemCount(); i++) {
          photos.add(new AndroidPhoto(getContentResolver(), clip.getItemAt(i).getUri()));
        }
      } else if (data.getData() != null) {
        photos.add(new AndroidPhoto(getContentResolver(), data.getData()));
      }
      addPhotos(photos, null);
    } else if (request == TAKE_PHOTO) {
      addPhotos(Collections.singletonList(new AndroidPhoto(getContentResolver(),
          PhotoProvider.uri(PhotoProvider.CAPTURE))), Ui.captureFile(this));
    }
  }

  private void addPhotos(final List<AndroidPhoto> photos, final File capture) {
    final int slot = pendingSlot;
    submit(new Runnable() {
      @Override
      public void run() {
        vm.addPhotos(slot, photos, capture);
      }
    });
  }

  private void confirmLoad() {
    int n = current == null ? 0 : current.photoNames.size();
    new AlertDialog.Builder(this)
        .setTitle(R.string.confirm_load_title)
        .setMessage(getString(R.string.confirm_load_message, n))
        .setPositiveButton(R.string.confirm_load, new DialogInterface.OnClickListener() {
          @Override
          public void onClick(DialogInterface d, int which) {
            loadPending(true);
          }
        })
        .setNegativeButton(R.string.cancel, new DialogInterface.OnClickListener() {
          @Override
          public void onClick(DialogInterface d, int which) {
            pendingModel = null;
          }
        })
        .show();
  }

  private void loadPending(final boolean confirmed) {
    final Uri uri = pendingModel;
    pendingModel = null;
    submit(new Runnable() {
      @Override
      public void run() {
        vm.loadModel(Ui.source(getContentResolver(), uri), confirmed);
      }
    });
  }

  @Override
  public void onState(final PersonalizeViewModel.State s) {
    runOnUiThread(new Runnable() {
      @Override
      public void run() {
        render(s);
      }
    });
  }

  private void render(PersonalizeViewModel.State s) {
    current = s;
    Ui.showError(error, s.error);
    recovery.setVisibility(s.storageError == null ? View.GONE : View.VISIBLE);
    recoveryText.setText(s.storageError == null ? "" : getString(R.string.storage_error_title) + "\n" + s.storageError);
    if (!s.labels.equals(shownLabels)) {
      rebuildClasses(s.labels);
    }
    for (int i = 0; i < s.labels.size(); i++) {
      LinearLayout row = (LinearLayout) classes.getChildAt(i);
      ((TextView) row.getChildAt(1)).setText(getString(R.string.photo_count, s.photos[i]));
      ((Button) row.getChildAt(4)).setText(getString(R.string.photos_button, s.photos[i]));
    }
    renderPhotoList(s);
    boolean idle = s.busy == null;
    for (Button b : actions) {
      b.setEnabled(idle && s.storageError == null);
    }
    enableButtons(classes, idle);
    enableButtons(photoList, idle);
    train.setEnabled(s.storageError == null && (idle || s.training));
    train.setText(s.training ? getString(R.string.cancel)
        : s.resumable != null ? getString(R.string.continue_run, s.resumable) : getString(R.string.train));
    undo.setVisibility(s.canUndo ? View.VISIBLE : View.GONE);
    busyText.setText(idle ? "" : s.total > 0 ? getString(R.string.busy_progress, s.busy, s.done, s.total)
        : getString(R.string.busy, s.busy));
    progress.setIndeterminate(!idle && s.total == 0);
    progress.setMax(Math.max(1, s.total));
    progress.setProgress(s.done);
    cancel.setVisibility(idle ? View.GONE : View.VISIBLE);
    status.setText(statusText(s));
  }

  private String statusText(PersonalizeViewModel.State s) {
    StringBuilder sb = new StringBuilder(s.model == null ? getString(R.string.no_model) : s.model);
    if (!Double.isNaN(s.loss)) {
      sb.append('\n').append(getString(R.string.training_status, s.epoch, s.epochs, s.step, s.steps, s.loss,
          s.accuracy));
      sb.append('\n').append(Double.isNaN(s.valAccuracy) ? getString(R.string.no_validation)
          : getString(R.string.validation_status, s.valAccuracy, s.valPhotos));
    }
    if (s.message != null) {
      sb.append('\n').append(s.message);
    }
    return sb.toString();
  }

  private void rebuildClasses(List<String> labels) {
    classes.removeAllViews();
    names.clear();
    shownLabels = labels;
    for (int i = 0; i < labels.size(); i++) {
      final int slot = i;
      LinearLayout row = new LinearLayout(this);
      EditText name = new EditText(this);
      name.setId(ID_NAME + i);
      name.setText(labels.get(i));
      name.setSingleLine(true);
      row.addView(name);
      row.addView(new TextView(this));
      row.addView(Ui.button(this, R.string.camera, new View.OnClickListener() {
        @Override
        public void onClick(View v) {
          commitNames();
          pendingSlot = slot;
          vm.discard(Ui.captureFile(MainActivity.this));  // no stale photo can be added if the camera writes nothing
          Ui.capture(MainActivity.this, TAKE_PHOTO, error);
        }
      }));
      row.addView(Ui.button(this, R.string.gallery, new View.OnClickListener() {
        @Override
        public void onClick(View v) {
          commitNames();
          pendingSlot = slot;
          Ui.pick(MainActivity.this, PICK_PHOTO, "image/*", true, error);
        }
      }));
      row.addView(Ui.button(this, R.string.photos_button, new View.OnClickListener() {
        @Override
        public void onClick(View v) {
          expandedSlot = expandedSlot == slot ? -1 : slot;
          if (current != null) {
            renderPhotoList(current);
          }
        }
      }));
      classes.addView(row);
      names.add(name);
    }
  }

  private static void enableButtons(android.view.ViewGroup group, boolean enabled) {
    for (int i = 0; i < group.getChildCount(); i++) {
      View v = group.getChildAt(i);
      if (v instanceof Button) {
        v.setEnabled(enabled);
      } else if (v instanceof android.view.ViewGroup) {
        enableButtons((android.view.ViewGroup) v, enabled);
      }
    }
  }

  /** The photos of the expanded class, each with Delete. */
  private void renderPhotoList(PersonalizeViewModel.State s) {
    photoList.removeAllViews();
    if (expandedSlot < 0 || expandedSlot >= s.labels.size()) {
      return;
    }
    for (int r = 0; r < s.photoLabels.length; r++) {
      if (s.photoLabels[r] != expandedSlot) {
        continue;
      }
      final int row = r;
      LinearLayout line = new LinearLayout(this);
      TextView name = new TextView(this);
      name.setText(s.photoNames.get(r));
      line.addView(name);
      line.addView(Ui.button(this, R.string.delete, new View.OnClickListener() {
        @Override
        public void onClick(View v) {
          submit(new Runnable() {
            @Override
            public void run() {
              vm.deletePhoto(row);
            }
          });
        }
      }));
      photoList.addView(line);
    }
  }
}

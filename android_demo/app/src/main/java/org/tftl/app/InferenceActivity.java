package org.tftl.app;

import android.app.Activity;
import android.content.Intent;
import android.net.Uri;
import android.os.Bundle;
import android.view.View;
import android.widget.LinearLayout;
import android.widget.ScrollView;
import android.widget.TextView;
import java.io.File;

/**
 * Classify a photo from the camera or the gallery: the top-3 classes and the inference latency.
 * Decoding and the model run on the view model's worker thread; the result is posted back.
 */
public final class InferenceActivity extends Activity implements PersonalizeViewModel.Observer {
  static final int PICK = 1;
  static final int TAKE = 2;
  private TextView error;
  private TextView result;
  private String shown = "";

  @Override
  protected void onCreate(Bundle saved) {
    super.onCreate(saved);
    if (saved != null) {
      shown = saved.getString("result", "");
    }
    LinearLayout root = new LinearLayout(this);
    root.setOrientation(LinearLayout.VERTICAL);
    error = Ui.errorLine(this);
    root.addView(error);
    root.addView(Ui.button(this, R.string.camera, new View.OnClickListener() {
      @Override
      public void onClick(View v) {
        viewModel().discard(Ui.captureFile(InferenceActivity.this));
        Ui.capture(InferenceActivity.this, TAKE, error);
      }
    }));
    root.addView(Ui.button(this, R.string.gallery, new View.OnClickListener() {
      @Override
      public void onClick(View v) {
        Ui.pick(InferenceActivity.this, PICK, "image/*", false, error);
      }
    }));
    result = new TextView(this);
    result.setText(shown);
    root.addView(result);
    ScrollView scroll = new ScrollView(this);
    scroll.addView(root);
    Ui.applyInsets(scroll);
    setContentView(scroll);
  }

  @Override
  protected void onSaveInstanceState(Bundle out) {
    super.onSaveInstanceState(out);
    out.putString("result", shown);
  }

  @Override
  protected void onStart() {
    super.onStart();
    viewModel().addObserver(this);
  }

  @Override
  protected void onStop() {
    viewModel().removeObserver(this);
    super.onStop();
  }

  /** Errors of the classification (an undecodable photo, no model) appear on the error line. */
  @Override
  public void onState(final PersonalizeViewModel.State s) {
    runOnUiThread(new Runnable() {
      @Override
      public void run() {
        Ui.showError(error, s.error);
      }
    });
  }

  private PersonalizeViewModel viewModel() {
    return ((TftlApp) getApplication()).viewModel();
  }

  @Override
  protected void onActivityResult(int request, int code, Intent data) {
    if (code != RESULT_OK) {
      return;
    }
    if (request == PICK && data != null && data.getData() != null) {
      classify(data.getData(), null);
    } else if (request == TAKE) {
      classify(PhotoProvider.uri(PhotoProvider.CAPTURE), Ui.captureFile(this));
    }
  }

  /** Classifies on the worker thread; the top-3 lines and the latency, or the error, appear when done. */
  void classify(Uri uri, File capture) {
    Ui.showError(error, null);
    PersonalizeViewModel.Result<PersonalizeViewModel.Prediction> done =
        new PersonalizeViewModel.Result<PersonalizeViewModel.Prediction>() {
          @Override
          public void done(final PersonalizeViewModel.Prediction p) {
            runOnUiThread(new Runnable() {
              @Override
              public void run() {
                show(p);
              }
            });
          }
        };
    try {
      viewModel().classify(new AndroidPhoto(getContentResolver(), uri), capture, done);
    } catch (RuntimeException e) {
      Ui.showError(error, e.getMessage());
    }
  }

  private void show(PersonalizeViewModel.Prediction p) {
    StringBuilder sb = new StringBuilder();
    for (int i = 0; i < p.labels.size(); i++) {
      sb.append(getString(R.string.result_line, i + 1, p.labels.get(i), 100 * p.probabilities[i])).append('\n');
    }
    sb.append(getString(R.string.latency, p.millis));
    shown = sb.toString();
    result.setText(shown);
  }

  String shown() {
    return shown;
  }
}

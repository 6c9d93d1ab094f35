package org.tftl.app;

import android.app.Activity;
import android.content.Intent;
import android.net.Uri;
import android.os.Bundle;
import android.provider.MediaStore;
import android.view.View;
import android.widget.Button;
import android.widget.LinearLayout;
import android.widget.TextView;

/** Classify a photo from the camera or the gallery: the top-3 classes and the inference latency. */
public final class InferenceActivity extends Activity {
  static final int PICK = 1;
  static final int TAKE = 2;
  private TextView result;

  @Override
  protected void onCreate(Bundle saved) {
    super.onCreate(saved);
    LinearLayout root = new LinearLayout(this);
    root.setOrientation(LinearLayout.VERTICAL);
    Button camera = new Button(this);
    camera.setText("Camera");
    camera.setOnClickListener(new View.OnClickListener() {
      @Override
      public void onClick(View v) {
      Intent i = new Intent(MediaStore.ACTION_IMAGE_CAPTURE);
      i.putExtra(MediaStore.EXTRA_OUTPUT, PhotoProvider.uri(PhotoProvider.CAPTURE));
      i.addFlags(Intent.FLAG_GRANT_WRITE_URI_PERMISSION | Intent.FLAG_GRANT_READ_URI_PERMISSION);
      startActivityForResult(i, TAKE);
      }
    });
    Button gallery = new Button(this);
    gallery.setText("Gallery");
    gallery.setOnClickListener(new View.OnClickListener() {
      @Override
      public void onClick(View v) {
        startActivityForResult(new Intent(Intent.ACTION_OPEN_DOCUMENT)
            .addCategory(Intent.CATEGORY_OPENABLE).setType("image/*"), PICK);
      }
    });
    result = new TextView(this);
    root.addView(camera);
    root.addView(gallery);
    root.addView(result);
    setContentView(root);
  }

  @Override
  protected void onActivityResult(int request, int code, Intent data) {
    if (code != RESULT_OK) {
      return;
    }
    Uri uri = request == PICK && data != null ? data.getData() : PhotoProvider.uri(PhotoProvider.CAPTURE);
    result.setText(format(uri));
  }

  /** Runs the classification and formats it; errors become the text shown. */
  String format(Uri uri) {
    PersonalizeViewModel vm = ((TftlApp) getApplication()).viewModel();
    try {
      PersonalizeViewModel.Prediction p = vm.classify(new AndroidPhoto(getContentResolver(), uri));
      StringBuilder sb = new StringBuilder();
      for (int i = 0; i < p.labels.size(); i++) {
        sb.append(String.format("%d. %s  %.1f%%%n", i + 1, p.labels.get(i), 100 * p.probabilities[i]));
      }
      sb.append(String.format("%.1f ms", p.millis));
      return sb.toString();
    } catch (Exception e) {
      return e.getMessage();
    }
  }
}

package org.tftl.app;

import android.app.Application;
import java.io.File;
import java.io.IOException;
import java.io.InputStream;

/**
 * Holds the one {@link PersonalizeViewModel}: it survives rotations (Activities come and go) and
 * restores the app's storage at start-up. On the very first start, the model bundled in assets
 * (assets/model.tflite, if the build put one there) is loaded.
 */
public final class TftlApp extends Application {
  static final String BUNDLED_MODEL = "model.tflite";
  static final String PREFS = "settings";
  /** How interpreters are made: LiteRT's Interpreter; JVM tests (Robolectric) put the host backend here. */
  static PersonalizeViewModel.InterpreterFactory interpreters = new PersonalizeViewModel.InterpreterFactory() {
    @Override
    public org.tftl.core.SignatureInterpreter create(byte[] flatbuffer, int threads) {
      return new LiteRtInterpreter(flatbuffer, threads);
    }
  };
  private PersonalizeViewModel viewModel;
  private String startupError;

  @Override
  public void onCreate() {
    super.onCreate();
    int threads = getSharedPreferences(PREFS, MODE_PRIVATE)
        .getInt("threads", Math.min(4, Runtime.getRuntime().availableProcessors()));
    File dir = new File(getFilesDir(), "tftl");
    dir.mkdirs();
    try {
      viewModel = new PersonalizeViewModel(dir, interpreters, threads);
      if (viewModel.labels().isEmpty()) {
        loadBundledModel();
      }
    } catch (IOException | RuntimeException e) {
      startupError = e.getMessage();
    }
  }

  private void loadBundledModel() throws IOException {
    String[] assets = getAssets().list("");
    if (assets == null || !java.util.Arrays.asList(assets).contains(BUNDLED_MODEL)) {
      return;
    }
    try (InputStream in = getAssets().open(BUNDLED_MODEL)) {
      byte[] data = org.tftl.core.Files2.readBounded(in, org.tftl.core.ModelFile.MAX_FILE_BYTES, "assets/" + BUNDLED_MODEL);
      viewModel.loadModel(data, "assets/" + BUNDLED_MODEL);
    }
  }

  PersonalizeViewModel viewModel() {
    return viewModel;
  }

  /** Why the app could not restore its storage at start-up, or null. */
  String startupError() {
    return startupError;
  }
}

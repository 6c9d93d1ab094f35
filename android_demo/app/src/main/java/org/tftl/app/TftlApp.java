package org.tftl.app;

import android.app.Application;
import android.content.res.AssetManager;
import android.os.Looper;
import java.io.File;
import java.io.IOException;
import java.io.InputStream;
import java.util.Arrays;
import org.tftl.core.Blocking;
import org.tftl.core.ModelFile;
import org.tftl.core.SignatureInterpreter;

/**
 * Holds the one {@link PersonalizeViewModel}: it survives rotations (Activities come and go) and
 * restores the app's storage at start-up, on its worker thread. The view model always exists; a
 * storage it cannot restore shows as State.storageError with a way to reset. On the very first
 * start, the model bundled in assets (assets/model.tflite, if the build put one there) is loaded.
 */
public final class TftlApp extends Application {
  static final String BUNDLED_MODEL = "model.tflite";
  static final String PREFS = "settings";
  static final String THREADS = "threads";
  /** How interpreters are made: LiteRT's Interpreter; JVM tests (Robolectric) put the host backend here. */
  static PersonalizeViewModel.InterpreterFactory interpreters = new PersonalizeViewModel.InterpreterFactory() {
    @Override
    public SignatureInterpreter create(ModelFile mf, File stored, int threads) {
      return new LiteRtInterpreter(stored, mf.flatbufferLength, threads);
    }
  };
  /**
   * The core's thread rule in this app: file, decode, interpreter and checkpoint work on the main
   * (UI) thread throws. Such work is a bug (it belongs on the view model's worker); it fails with its
   * stack, in the tests and on a phone, instead of freezing the screen into an ANR.
   */
  static final Blocking.Guard OFF_MAIN_THREAD = new Blocking.Guard() {
    @Override
    public void check(Blocking.Kind kind, String what) {
      if (Looper.getMainLooper().isCurrentThread()) {
        throw new IllegalStateException(kind + " work on the main thread (" + what
            + "): it belongs on the view model's worker");
      }
    }
  };
  /** The guard onCreate installs; Robolectric tests wrap OFF_MAIN_THREAD to record what ran where. */
  static Blocking.Guard guard = OFF_MAIN_THREAD;
  private PersonalizeViewModel viewModel;

  @Override
  public void onCreate() {
    super.onCreate();
    Blocking.install(guard);
    if (viewModel != null) {
      viewModel.close();
    }
    viewModel = new PersonalizeViewModel(new File(getFilesDir(), "tftl"), interpreters, threads());
    viewModel.restore(bundledModel());
  }

  int threads() {
    return getSharedPreferences(PREFS, MODE_PRIVATE)
        .getInt(THREADS, Math.min(4, Runtime.getRuntime().availableProcessors()));
  }

  /** assets/model.tflite, opened on the worker thread; absent in a build without a bundled model. */
  PersonalizeViewModel.Source bundledModel() {
    final AssetManager assets = getAssets();
    return new PersonalizeViewModel.Source() {
      @Override
      public InputStream open() throws IOException {
        String[] names = assets.list("");
        return names != null && Arrays.asList(names).contains(BUNDLED_MODEL) ? assets.open(BUNDLED_MODEL) : null;
      }

      @Override
      public long size() {
        return -1;  // a compressed asset has no cheap size; the copy is bounded instead
      }

      @Override
      public String name() {
        return "assets/" + BUNDLED_MODEL;
      }
    };
  }

  PersonalizeViewModel viewModel() {
    return viewModel;
  }
}

package org.tftl.app;

import android.app.Activity;
import android.content.ActivityNotFoundException;
import android.content.ContentResolver;
import android.content.Context;
import android.content.Intent;
import android.database.Cursor;
import android.graphics.Insets;
import android.net.Uri;
import android.os.Build;
import android.provider.MediaStore;
import android.provider.OpenableColumns;
import android.view.View;
import android.view.WindowInsets;
import android.widget.Button;
import android.widget.TextView;
import java.io.File;
import java.io.IOException;
import java.io.InputStream;

/** What both screens share: buttons, the error line, edge-to-edge insets, a guarded camera, picked files. */
final class Ui {
  private Ui() {}

  static Button button(Context c, int text, View.OnClickListener l) {
    Button b = new Button(c);
    b.setText(text);
    b.setOnClickListener(l);
    return b;
  }

  /** The error line, at the top of the screen where the user looks after a tap; hidden when empty. */
  static TextView errorLine(Context c) {
    TextView t = new TextView(c);
    t.setTextColor(0xffb00020);
    t.setVisibility(View.GONE);
    return t;
  }

  static void showError(TextView line, String message) {
    line.setText(message == null ? "" : message);
    line.setVisibility(message == null ? View.GONE : View.VISIBLE);
  }

  /**
   * Pads {@code root} by the system bars, the display cutout and the keyboard: targetSdk 35 draws
   * edge to edge on Android 15, so without this the first and last rows sit under the bars.
   */
  static void applyInsets(View root) {
    root.setOnApplyWindowInsetsListener(new View.OnApplyWindowInsetsListener() {
      @Override
      public WindowInsets onApplyWindowInsets(View v, WindowInsets in) {
        if (Build.VERSION.SDK_INT >= 30) {
          Insets i = in.getInsets(WindowInsets.Type.systemBars() | WindowInsets.Type.displayCutout()
              | WindowInsets.Type.ime());
          v.setPadding(i.left, i.top, i.right, i.bottom);
        } else {
          v.setPadding(in.getSystemWindowInsetLeft(), in.getSystemWindowInsetTop(), in.getSystemWindowInsetRight(),
              in.getSystemWindowInsetBottom());
        }
        return in;
      }
    });
  }

  /**
   * Starts the system camera app writing to PhotoProvider's capture file; false (and the error
   * line says why) when no camera app is installed.
   */
  static boolean capture(Activity a, int request, TextView errorLine) {
    Intent i = new Intent(MediaStore.ACTION_IMAGE_CAPTURE);
    i.putExtra(MediaStore.EXTRA_OUTPUT, PhotoProvider.uri(PhotoProvider.CAPTURE));
    i.addFlags(Intent.FLAG_GRANT_WRITE_URI_PERMISSION | Intent.FLAG_GRANT_READ_URI_PERMISSION);
    try {
      a.startActivityForResult(i, request);
      return true;
    } catch (ActivityNotFoundException | SecurityException e) {
      showError(errorLine, a.getString(R.string.no_camera));
      return false;
    }
  }

  /** The document picker ({@code multiple}: several photos at once); false when none is installed. */
  static boolean pick(Activity a, int request, String type, boolean multiple, TextView errorLine) {
    Intent i = new Intent(Intent.ACTION_OPEN_DOCUMENT).addCategory(Intent.CATEGORY_OPENABLE).setType(type)
        .putExtra(Intent.EXTRA_ALLOW_MULTIPLE, multiple);
    try {
      a.startActivityForResult(i, request);
      return true;
    } catch (ActivityNotFoundException e) {
      showError(errorLine, a.getString(R.string.no_picker));
      return false;
    }
  }

  static File captureFile(Context c) {
    return new File(c.getCacheDir(), PhotoProvider.CAPTURE);
  }

  /** A picked file as a model source: opened and measured (OpenableColumns.SIZE) on the worker thread. */
  static PersonalizeViewModel.Source source(final ContentResolver resolver, final Uri uri) {
    return new PersonalizeViewModel.Source() {
      @Override
      public InputStream open() throws IOException {
        InputStream in = resolver.openInputStream(uri);
        if (in == null) {
          throw new IOException("cannot open " + uri);
        }
        return in;
      }

      @Override
      public long size() {
        try (Cursor c = resolver.query(uri, new String[] {OpenableColumns.SIZE}, null, null, null)) {
          return c != null && c.moveToFirst() && !c.isNull(0) ? c.getLong(0) : -1;
        } catch (RuntimeException e) {
          return -1;  // the copy is bounded anyway
        }
      }

      @Override
      public String name() {
        String s = uri.getLastPathSegment();
        return s == null ? uri.toString() : s.substring(s.lastIndexOf('/') + 1);
      }
    };
  }
}

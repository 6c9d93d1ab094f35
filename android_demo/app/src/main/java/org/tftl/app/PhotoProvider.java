package org.tftl.app;

import android.content.ContentProvider;
import android.content.ContentValues;
import android.database.Cursor;
import android.database.MatrixCursor;
import android.net.Uri;
import android.os.ParcelFileDescriptor;
import android.provider.OpenableColumns;
import java.io.File;
import java.io.FileNotFoundException;

/**
 * Serves two files of the app's cache folder by content URI, without AndroidX's FileProvider:
 * capture.jpg (the camera app writes the photo there) and the exported fine-tuned model (shared
 * read-only). Access is granted per Intent with FLAG_GRANT_*_URI_PERMISSION; not exported.
 */
public final class PhotoProvider extends ContentProvider {
  static final String AUTHORITY = "org.tftl.app.files";
  static final String CAPTURE = "capture.jpg";
  static final String SHARED_MODEL = "personalised.tflite";

  static Uri uri(String name) {
    return Uri.parse("content://" + AUTHORITY + "/" + name);
  }

  private File file(Uri uri) throws FileNotFoundException {
    String name = uri.getLastPathSegment();
    if (!CAPTURE.equals(name) && !SHARED_MODEL.equals(name)) {
      throw new FileNotFoundException(uri.toString());
    }
    return new File(getContext().getCacheDir(), name);
  }

  @Override
  public ParcelFileDescriptor openFile(Uri uri, String mode) throws FileNotFoundException {
    File f = file(uri);
    int m = CAPTURE.equals(f.getName()) ? ParcelFileDescriptor.parseMode(mode) : ParcelFileDescriptor.MODE_READ_ONLY;
    return ParcelFileDescriptor.open(f, m);
  }

  @Override
  public Cursor query(Uri uri, String[] projection, String selection, String[] args, String sort) {
    MatrixCursor c = new MatrixCursor(new String[] {OpenableColumns.DISPLAY_NAME, OpenableColumns.SIZE});
    try {
      File f = file(uri);
      c.addRow(new Object[] {f.getName(), f.length()});
    } catch (FileNotFoundException e) {
      // an unknown name has no row
    }
    return c;
  }

  @Override
  public String getType(Uri uri) {
    return CAPTURE.equals(uri.getLastPathSegment()) ? "image/jpeg" : "application/octet-stream";
  }

  @Override
  public boolean onCreate() {
    return true;
  }

  @Override
  public Uri insert(Uri uri, ContentValues values) {
    throw new UnsupportedOperationException("read-only provider");
  }

  @Override
  public int delete(Uri uri, String selection, String[] args) {
    return 0;
  }

  @Override
  public int update(Uri uri, ContentValues values, String selection, String[] args) {
    return 0;
  }
}

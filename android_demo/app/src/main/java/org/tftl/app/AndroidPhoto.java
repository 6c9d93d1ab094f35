package org.tftl.app;

import android.content.ContentResolver;
import android.graphics.Bitmap;
import android.graphics.BitmapFactory;
import android.graphics.Matrix;
import android.media.ExifInterface;
import android.net.Uri;
import java.io.IOException;
import java.io.InputStream;
import org.tftl.core.Blocking;

/**
 * A photo behind a content URI (camera capture or gallery pick). Decoding mirrors tftl's
 * load_image: the crop is chosen on the upright full-resolution size, the JPEG is decoded at
 * 1/sampleSize in the DCT (BitmapFactory's inSampleSize, like Pillow's draft), then rotated by
 * its EXIF orientation.
 */
final class AndroidPhoto implements Photo {
  private final ContentResolver resolver;
  private final Uri uri;

  AndroidPhoto(ContentResolver resolver, Uri uri) {
    this.resolver = resolver;
    this.uri = uri;
  }

  @Override
  public String name() {
    String s = uri.getLastPathSegment();
    return s == null ? uri.toString() : s.substring(s.lastIndexOf('/') + 1);
  }

  private InputStream open() throws IOException {
    Blocking.check(Blocking.Kind.DECODE, "opening " + uri);
    InputStream in = resolver.openInputStream(uri);
    if (in == null) {
      throw new IOException("cannot open " + uri);
    }
    return in;
  }

  private int orientation() throws IOException {
    try (InputStream in = open()) {
      return new ExifInterface(in).getAttributeInt(ExifInterface.TAG_ORIENTATION, ExifInterface.ORIENTATION_NORMAL);
    }
  }

  private int[] rawSize() throws IOException {
    BitmapFactory.Options o = new BitmapFactory.Options();
    o.inJustDecodeBounds = true;
    try (InputStream in = open()) {
      BitmapFactory.decodeStream(in, null, o);
    }
    if (o.outWidth <= 0 || o.outHeight <= 0) {
      throw new IOException(uri + " is not an image Android can decode");
    }
    return new int[] {o.outWidth, o.outHeight};
  }

  private static boolean swaps(int orientation) {
    return orientation >= 5 && orientation <= 8;
  }

  @Override
  public int[] uprightSize() throws IOException {
    int[] raw = rawSize();
    return swaps(orientation()) ? new int[] {raw[1], raw[0]} : raw;
  }

  @Override
  public Decoded decode(int sampleSize) throws IOException {
    int[] raw = rawSize();
    int orientation = orientation();
    BitmapFactory.Options o = new BitmapFactory.Options();
    o.inSampleSize = sampleSize;
    o.inPreferredConfig = Bitmap.Config.ARGB_8888;
    Bitmap bitmap;
    try (InputStream in = open()) {
      bitmap = BitmapFactory.decodeStream(in, null, o);
    }
    if (bitmap == null) {
      throw new IOException(uri + " is not an image Android can decode");
    }
    return upright(bitmap, orientation, raw[0]);
  }

  /**
   * The pixels of {@code decoded} turned upright by its EXIF {@code orientation}, as RGB bytes.
   * Both bitmaps are recycled as soon as their pixels are copied, and also when that fails (out of
   * memory included): their native memory goes back now, not at some later GC.
   */
  static Decoded upright(Bitmap decoded, int orientation, int rawWidth) {
    int rawDecodedWidth = decoded.getWidth();
    Bitmap upright = decoded;
    int[] argb;
    int w;
    int h;
    try {
      upright = rotate(decoded, orientation);
      w = upright.getWidth();
      h = upright.getHeight();
      argb = new int[w * h];
      upright.getPixels(argb, 0, w, 0, 0, w, h);
    } finally {
      if (upright != decoded) {
        upright.recycle();
      }
      decoded.recycle();
    }
    byte[] rgb = new byte[w * h * 3];
    for (int i = 0; i < argb.length; i++) {
      rgb[3 * i] = (byte) (argb[i] >> 16);
      rgb[3 * i + 1] = (byte) (argb[i] >> 8);
      rgb[3 * i + 2] = (byte) argb[i];
    }
    return new Decoded(rgb, w, h, rawWidth, rawDecodedWidth);
  }

  /** ImageOps.exif_transpose's eight orientations. */
  private static Bitmap rotate(Bitmap b, int orientation) {
    Matrix m = new Matrix();
    switch (orientation) {
      case ExifInterface.ORIENTATION_FLIP_HORIZONTAL: m.setScale(-1, 1); break;
      case ExifInterface.ORIENTATION_ROTATE_180: m.setRotate(180); break;
      case ExifInterface.ORIENTATION_FLIP_VERTICAL: m.setScale(1, -1); break;
      case ExifInterface.ORIENTATION_TRANSPOSE: m.setRotate(90); m.postScale(-1, 1); break;
      case ExifInterface.ORIENTATION_ROTATE_90: m.setRotate(90); break;
      case ExifInterface.ORIENTATION_TRANSVERSE: m.setRotate(-90); m.postScale(-1, 1); break;
      case ExifInterface.ORIENTATION_ROTATE_270: m.setRotate(-90); break;
      default: return b;
    }
    return Bitmap.createBitmap(b, 0, 0, b.getWidth(), b.getHeight(), m, false);
  }
}

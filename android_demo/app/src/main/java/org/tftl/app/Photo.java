package org.tftl.app;

import java.io.IOException;

/**
 * A photo to preprocess, decoded on demand at a reduced scale. On Android, {@code AndroidPhoto}
 * decodes a content URI with BitmapFactory (inSampleSize = the JPEG DCT scale Pillow's draft
 * uses) and applies the EXIF rotation; on the host, tests decode files with the JDK.
 */
public interface Photo {
  /** Upright (EXIF-rotated) size at full resolution, read without decoding the pixels. */
  int[] uprightSize() throws IOException;

  /** The pixels decoded at 1/{@code sampleSize} scale, rotated upright. */
  Decoded decode(int sampleSize) throws IOException;

  /** What the photo list shows. */
  default String name() {
    return "photo";
  }

  /** Decoded upright RGB pixels and what Preprocess.fromDecoded needs to place the crop. */
  final class Decoded {
    public final byte[] rgb;
    public final int width;
    public final int height;
    /** The stored (pre-rotation) width at full resolution and as decoded. */
    public final int rawWidth;
    public final int rawDecodedWidth;

    public Decoded(byte[] rgb, int width, int height, int rawWidth, int rawDecodedWidth) {
      this.rgb = rgb;
      this.width = width;
      this.height = height;
      this.rawWidth = rawWidth;
      this.rawDecodedWidth = rawDecodedWidth;
    }
  }
}

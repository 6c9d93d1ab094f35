package org.tftl.core;

/**
 * tftl's eval preprocessing (tftl/runtime/data.py load_image, augment=None), pixel for pixel:
 * the centred square whose side is the shorter side, resized to size x size with Pillow's
 * BILINEAR resampling (Resample.c: a triangle filter widened by the downscale factor, 22-bit
 * fixed-point coefficients, a horizontal pass rounded to 8 bits, then a vertical pass), as RGB
 * float32 0..255 in HWC order.
 *
 * <p>Pillow decodes JPEGs at 1/2, 1/4 or 1/8 scale ("draft") while the crop keeps at least
 * {@code size} pixels a side; {@link #draftScale} gives that factor so the app can decode with
 * the same {@code inSampleSize} (Android's libjpeg-turbo scales in the DCT the same way), and
 * {@link #fromDecoded} maps the crop box onto the decoded pixels exactly as data.py does.
 */
public final class Preprocess {
  private static final int PRECISION_BITS = 32 - 8 - 2;

  private Preprocess() {}

  /** The centred square (left, top, right, bottom) of a width x height image, as center_crop_box. */
  public static double[] centerCropBox(int width, int height) {
    int side = Math.min(width, height);
    double left = (width - side) / 2.0;
    double top = (height - side) / 2.0;
    return new double[] {left, top, left + side, top + side};
  }

  /** Largest JPEG DCT scale (8, 4, 2, 1) that keeps the centre crop >= size pixels a side (_draft_scale). */
  public static int draftScale(int width, int height, int size) {
    return draftScale(centerCropBox(width, height), size);
  }

  /** Largest JPEG DCT scale (8, 4, 2, 1) that keeps {@code box} >= size pixels a side (_draft_scale). */
  public static int draftScale(double[] box, int size) {
    double shorter = Math.min(box[2] - box[0], box[3] - box[1]);
    for (int s : new int[] {8, 4, 2}) {
      if ((double) shorter / s >= size) {
        return s;
      }
    }
    return 1;
  }

  /**
   * The model input for an upright image decoded at reduced scale.
   *
   * @param rgb decoded upright pixels, 3 bytes (R, G, B) per pixel, row-major
   * @param width decoded width
   * @param height decoded height
   * @param fullWidth upright width at full resolution (the crop box is chosen there)
   * @param fullHeight upright height at full resolution
   * @param rawWidth the file's stored (pre-rotation) width at full resolution
   * @param rawDecodedWidth the stored (pre-rotation) width as decoded (rawWidth when not scaled)
   * @param size the model's image size R
   * @return float32 [R, R, 3] in 0..255
   */
  public static float[] fromDecoded(byte[] rgb, int width, int height, int fullWidth, int fullHeight,
      int rawWidth, int rawDecodedWidth, int size) {
    return fromDecoded(rgb, width, height, centerCropBox(fullWidth, fullHeight), false, rawWidth, rawDecodedWidth,
        size);
  }

  /**
   * The model input for crop {@code fullBox} (on the upright full-resolution image; the centre crop or
   * an {@link Augment} view), mirrored left-right when {@code flip}; the rest as the eval overload.
   */
  public static float[] fromDecoded(byte[] rgb, int width, int height, double[] fullBox, boolean flip,
      int rawWidth, int rawDecodedWidth, int size) {
    Blocking.check(Blocking.Kind.DECODE, "preprocessing a photo");
    double scale = (double) rawWidth / rawDecodedWidth;
    double[] box = new double[4];
    double[] lim = {width, height, width, height};
    for (int i = 0; i < 4; i++) {
      box[i] = Math.min(fullBox[i] / scale, lim[i]);
    }
    float[] out = resize(rgb, width, height, box, size);
    return flip ? mirror(out, size) : out;
  }

  /** A size x size x 3 image mirrored left-right (Image.Transpose.FLIP_LEFT_RIGHT). */
  static float[] mirror(float[] img, int size) {
    float[] out = new float[img.length];
    for (int y = 0; y < size; y++) {
      for (int x = 0; x < size; x++) {
        System.arraycopy(img, (y * size + x) * 3, out, (y * size + size - 1 - x) * 3, 3);
      }
    }
    return out;
  }

  /** The model input for upright pixels decoded at full resolution. */
  public static float[] fromPixels(byte[] rgb, int width, int height, int size) {
    return fromDecoded(rgb, width, height, width, height, width, width, size);
  }

  /** Pillow's Image.resize((size, size), BILINEAR, box=box, reducing_gap=None) of an RGB image. */
  public static float[] resize(byte[] rgb, int width, int height, double[] box, int size) {
    if (rgb.length != 3L * width * height) {
      throw new IllegalArgumentException("pixels hold " + rgb.length + " bytes, not 3 x " + width + " x " + height);
    }
    byte[] out;
    boolean integral = box[0] == Math.floor(box[0]) && box[1] == Math.floor(box[1]);
    if (integral && box[2] - box[0] == size && box[3] - box[1] == size) {
      out = crop(rgb, width, (int) box[0], (int) box[1], size);  // Pillow crops instead of resampling
    } else {
      out = resample(rgb, width, height, box, size, size);
    }
    float[] f = new float[out.length];
    for (int i = 0; i < f.length; i++) {
      f[i] = out[i] & 0xff;
    }
    return f;
  }

  private static byte[] crop(byte[] rgb, int width, int x0, int y0, int size) {
    byte[] out = new byte[size * size * 3];
    for (int y = 0; y < size; y++) {
      System.arraycopy(rgb, ((y0 + y) * width + x0) * 3, out, y * size * 3, size * 3);
    }
    return out;
  }

  /** Coefficients of one axis: bounds {xmin, count} per output pixel and ksize weights each. */
  private static final class Coeffs {
    int ksize;
    int[] bounds;
    int[] kk;
  }

  private static double bilinear(double x) {
    x = Math.abs(x);
    return x < 1.0 ? 1.0 - x : 0.0;
  }

  /** precompute_coeffs + normalize_coeffs_8bpc of Resample.c, for the bilinear filter (support 1). */
  private static Coeffs coeffs(int inSize, double in0, double in1, int outSize) {
    double scale = (in1 - in0) / outSize;
    double filterscale = Math.max(scale, 1.0);
    double support = 1.0 * filterscale;
    int ksize = (int) Math.ceil(support) * 2 + 1;
    Coeffs c = new Coeffs();
    c.ksize = ksize;
    c.bounds = new int[outSize * 2];
    c.kk = new int[outSize * ksize];
    double[] k = new double[ksize];
    for (int xx = 0; xx < outSize; xx++) {
      double center = in0 + (xx + 0.5) * scale;
      double ww = 0.0;
      double ss = 1.0 / filterscale;
      int xmin = (int) (center - support + 0.5);
      if (xmin < 0) {
        xmin = 0;
      }
      int xmax = (int) (center + support + 0.5);
      if (xmax > inSize) {
        xmax = inSize;
      }
      xmax -= xmin;
      for (int x = 0; x < xmax; x++) {
        double w = bilinear((x + xmin - center + 0.5) * ss);
        k[x] = w;
        ww += w;
      }
      for (int x = 0; x < ksize; x++) {
        double v = x < xmax ? (ww != 0.0 ? k[x] / ww : k[x]) : 0.0;
        c.kk[xx * ksize + x] = v < 0 ? (int) (-0.5 + v * (1 << PRECISION_BITS)) : (int) (0.5 + v * (1 << PRECISION_BITS));
      }
      c.bounds[xx * 2] = xmin;
      c.bounds[xx * 2 + 1] = xmax;
    }
    return c;
  }

  private static int clip8(long in) {
    if (in >= (1L << PRECISION_BITS << 8)) {
      return 255;
    }
    if (in <= 0) {
      return 0;
    }
    return (int) (in >> PRECISION_BITS);
  }

  /** ImagingResampleInner: horizontal pass (rows the vertical pass uses), then vertical. */
  private static byte[] resample(byte[] in, int inW, int inH, double[] box, int outW, int outH) {
    boolean needH = outW != inW || box[0] != 0 || box[2] != outW;
    boolean needV = outH != inH || box[1] != 0 || box[3] != outH;
    Coeffs h = coeffs(inW, box[0], box[2], outW);
    Coeffs v = coeffs(inH, box[1], box[3], outH);
    int yFirst = v.bounds[0];
    int yLast = v.bounds[outH * 2 - 2] + v.bounds[outH * 2 - 1];
    byte[] img = in;
    int w = inW;
    int rows = inH;
    int[] vb = v.bounds.clone();
    if (needH) {
      for (int i = 0; i < outH; i++) {
        vb[i * 2] -= yFirst;
      }
      rows = yLast - yFirst;
      byte[] tmp = new byte[outW * rows * 3];
      for (int yy = 0; yy < rows; yy++) {
        int src = (yy + yFirst) * inW * 3;
        for (int xx = 0; xx < outW; xx++) {
          int xmin = h.bounds[xx * 2];
          int xmax = h.bounds[xx * 2 + 1];
          long s0 = 1L << (PRECISION_BITS - 1);
          long s1 = s0;
          long s2 = s0;
          for (int x = 0; x < xmax; x++) {
            int k = h.kk[xx * h.ksize + x];
            int p = src + (x + xmin) * 3;
            s0 += (in[p] & 0xff) * k;
            s1 += (in[p + 1] & 0xff) * k;
            s2 += (in[p + 2] & 0xff) * k;
          }
          int o = (yy * outW + xx) * 3;
          tmp[o] = (byte) clip8(s0);
          tmp[o + 1] = (byte) clip8(s1);
          tmp[o + 2] = (byte) clip8(s2);
        }
      }
      img = tmp;
      w = outW;
    }
    if (!needV) {
      return img;
    }
    byte[] out = new byte[w * outH * 3];
    for (int yy = 0; yy < outH; yy++) {
      int ymin = vb[yy * 2];
      int ymax = vb[yy * 2 + 1];
      for (int xx = 0; xx < w; xx++) {
        long s0 = 1L << (PRECISION_BITS - 1);
        long s1 = s0;
        long s2 = s0;
        for (int y = 0; y < ymax; y++) {
          int k = v.kk[yy * v.ksize + y];
          int p = ((y + ymin) * w + xx) * 3;
          s0 += (img[p] & 0xff) * k;
          s1 += (img[p + 1] & 0xff) * k;
          s2 += (img[p + 2] & 0xff) * k;
        }
        int o = (yy * w + xx) * 3;
        out[o] = (byte) clip8(s0);
        out[o + 1] = (byte) clip8(s1);
        out[o + 2] = (byte) clip8(s2);
      }
    }
    return out;
  }
}

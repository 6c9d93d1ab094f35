package org.tftl.core;

import java.util.SplittableRandom;

/**
 * tftl's training augmentation (tftl/runtime/data.py, load_image with augment): torchvision's
 * RandomResizedCrop box ({@code random_resized_crop_box}: area fraction uniform in CROP_SCALE,
 * log-aspect uniform in CROP_RATIO, CROP_ATTEMPTS tries, else the whole image cut to the nearest
 * allowed aspect), resized to size x size with Pillow's BILINEAR ({@link Preprocess#fromDecoded}),
 * then a horizontal flip with probability FLIP_P. The box is chosen on the upright full-resolution
 * image, so the draws depend only on its size, never on the decoder.
 *
 * <p>The constants mirror data.py (CROP_SCALE, CROP_RATIO, CROP_ATTEMPTS; FLIP_P is its literal
 * {@code random() < 0.5}); the host AugmentTest reads Python's values (tests/test_android.py writes
 * them) and compares, with the distribution of Python's boxes. Each cached view of each photo has
 * its own generator, {@link #rng}(seed, view, photo), as features._view_seed: a run is reproducible.
 * Python's numpy generator is not reproduced (other draws, the same distribution).
 */
public final class Augment {
  public static final double CROP_SCALE_MIN = 0.25;
  public static final double CROP_SCALE_MAX = 1.0;
  public static final double CROP_RATIO_MIN = 3.0 / 4.0;
  public static final double CROP_RATIO_MAX = 4.0 / 3.0;
  public static final int CROP_ATTEMPTS = 10;
  public static final double FLIP_P = 0.5;

  /** One augmented view: the crop box (left, top, right, bottom) on the upright image, and the flip. */
  public static final class View {
    public final double[] box;
    public final boolean flip;

    View(double[] box, boolean flip) {
      this.box = box;
      this.flip = flip;
    }
  }

  private Augment() {}

  /** The generator of cached view {@code view} of photo {@code photo} in a run seeded {@code seed}. */
  public static SplittableRandom rng(long seed, int view, int photo) {
    long s = seed;
    s = s * 0x9E3779B97F4A7C15L + 0x5eedL + view;
    s = s * 0x9E3779B97F4A7C15L + photo;
    return new SplittableRandom(s);
  }

  /** random_resized_crop_box then the flip (data._choose_crop), for an upright width x height image. */
  public static View view(int width, int height, SplittableRandom rng) {
    double[] box = cropBox(width, height, rng);
    return new View(box, rng.nextDouble() < FLIP_P);
  }

  /** View {@code view} of photo {@code photo} in a run seeded {@code seed}. */
  public static View view(int width, int height, long seed, int view, int photo) {
    return view(width, height, rng(seed, view, photo));
  }

  /** data.random_resized_crop_box, in its order of draws (area, aspect, top, left). */
  public static double[] cropBox(int width, int height, SplittableRandom rng) {
    double area = (double) width * height;
    double logLo = Math.log(CROP_RATIO_MIN);
    double logHi = Math.log(CROP_RATIO_MAX);
    for (int i = 0; i < CROP_ATTEMPTS; i++) {
      double target = area * uniform(rng, CROP_SCALE_MIN, CROP_SCALE_MAX);
      double aspect = Math.exp(uniform(rng, logLo, logHi));
      // Python's round takes halves to even, Math.round up: no effect on the distribution
      long w = Math.round(Math.sqrt(target * aspect));
      long h = Math.round(Math.sqrt(target / aspect));
      if (0 < w && w <= width && 0 < h && h <= height) {
        int top = rng.nextInt((int) (height - h + 1));
        int left = rng.nextInt((int) (width - w + 1));
        return new double[] {left, top, left + w, top + h};
      }
    }
    double inRatio = (double) width / height;
    long w = width;
    long h = height;
    if (inRatio < CROP_RATIO_MIN) {
      h = Math.round(width / CROP_RATIO_MIN);
    } else if (inRatio > CROP_RATIO_MAX) {
      w = Math.round(height * CROP_RATIO_MAX);
    }
    long top = (height - h) / 2;
    long left = (width - w) / 2;
    return new double[] {left, top, left + w, top + h};
  }

  private static double uniform(SplittableRandom rng, double lo, double hi) {
    return lo + (hi - lo) * rng.nextDouble();
  }
}

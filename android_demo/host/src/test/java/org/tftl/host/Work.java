package org.tftl.host;

import static org.junit.jupiter.api.Assertions.assertTrue;

import com.google.gson.JsonObject;
import com.google.gson.JsonParser;
import java.awt.image.BufferedImage;
import java.io.File;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.util.Arrays;
import java.util.List;
import javax.imageio.ImageIO;
import javax.imageio.ImageReadParam;
import javax.imageio.ImageReader;
import javax.imageio.stream.ImageInputStream;
import org.tftl.core.FeatureCache;
import org.tftl.core.ModelFile;
import org.tftl.core.Npy;
import org.tftl.core.TftlModel;

/**
 * The folder tests/test_android.py prepares (-Dtftl.work) and the library (-Dtftl.litert): the
 * exported model, preprocessed flowers5 photos and Python's reference results. Run through
 * Maven alone (no -D properties), the tests fail and say how to run them. Shared with the app module's tests
 * through this module's test-jar.
 */
public final class Work {
  public static final List<String> LABELS = Arrays.asList("daisy", "dandelion", "roses", "sunflowers", "tulips");
  public static final File DIR = new File(System.getProperty("tftl.work", ""));
  public static final String LIB = System.getProperty("tftl.litert", "");

  private Work() {}

  public static void require() {
    // A failure, not a skip: a bare `mvn verify` must not pass having run nothing.
    assertTrue(DIR.isDirectory() && new File(LIB).isFile(),
        "run through tests/test_android.py, which passes -Dtftl.work and -Dtftl.litert");
  }

  public static File file(String name) {
    return new File(DIR, name);
  }

  public static TftlModel.Factory factory() {
    return mf -> new LiteRtHostInterpreter(LIB, mf.flatbuffer(), 1);
  }

  public static TftlModel open(String name) throws IOException {
    return new TftlModel(ModelFile.read(file(name)), factory());
  }

  public static Npy.Array npy(String name) throws IOException {
    return Npy.read(Files.readAllBytes(file(name).toPath()));
  }

  public static int[] ints(String name) throws IOException {
    float[] f = npy(name).floats();
    int[] out = new int[f.length];
    for (int i = 0; i < f.length; i++) {
      out[i] = (int) f[i];
    }
    return out;
  }

  public static JsonObject json(String name) throws IOException {
    return JsonParser.parseString(new String(Files.readAllBytes(file(name).toPath()), StandardCharsets.UTF_8))
        .getAsJsonObject();
  }

  /** A photo file decoded by the JDK: RGB bytes, width, height; sampleSize keeps every n-th pixel. */
  public static final class Decoded {
    public final byte[] rgb;
    public final int width;
    public final int height;
    /** The stored width at full resolution. */
    public final int rawWidth;

    Decoded(byte[] rgb, int width, int height, int rawWidth) {
      this.rgb = rgb;
      this.width = width;
      this.height = height;
      this.rawWidth = rawWidth;
    }
  }

  /** {width, height} of an image file, read without decoding its pixels. */
  public static int[] size(File file) throws IOException {
    try (ImageInputStream in = ImageIO.createImageInputStream(file)) {
      ImageReader r = ImageIO.getImageReaders(in).next();
      r.setInput(in);
      return new int[] {r.getWidth(0), r.getHeight(0)};
    }
  }

  /** The pixels of an image file at 1/{@code sampleSize} scale (the phone scales in the DCT). */
  public static Decoded decode(File file, int sampleSize) throws IOException {
    try (ImageInputStream in = ImageIO.createImageInputStream(file)) {
      ImageReader r = ImageIO.getImageReaders(in).next();
      r.setInput(in);
      ImageReadParam p = r.getDefaultReadParam();
      p.setSourceSubsampling(sampleSize, sampleSize, 0, 0);
      int rawWidth = r.getWidth(0);
      BufferedImage img = r.read(0, p);
      return new Decoded(rgb(img), img.getWidth(), img.getHeight(), rawWidth);
    }
  }

  /** The pixels of a decoded image as packed RGB bytes, row by row. */
  public static byte[] rgb(BufferedImage img) {
    int w = img.getWidth();
    int h = img.getHeight();
    byte[] rgb = new byte[w * h * 3];
    for (int y = 0; y < h; y++) {
      for (int x = 0; x < w; x++) {
        int v = img.getRGB(x, y);
        int o = (y * w + x) * 3;
        rgb[o] = (byte) (v >> 16);
        rgb[o + 1] = (byte) (v >> 8);
        rgb[o + 2] = (byte) v;
      }
    }
    return rgb;
  }

  /** Extracts the features of images_{split}.npy through {@code model} into a cache. */
  public static FeatureCache cache(TftlModel model, String split) throws IOException {
    float[] images = npy("images_" + split + ".npy").floats();
    FeatureCache c = new FeatureCache(model.featureElements);
    c.add(model.extract(images), ints("labels_" + split + ".npy"));
    return c;
  }
}

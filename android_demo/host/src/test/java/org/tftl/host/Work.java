package org.tftl.host;

import static org.junit.jupiter.api.Assertions.assertTrue;

import com.google.gson.JsonObject;
import com.google.gson.JsonParser;
import java.io.File;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.util.Arrays;
import java.util.List;
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

  /** Extracts the features of images_{split}.npy through {@code model} into a cache. */
  public static FeatureCache cache(TftlModel model, String split) throws IOException {
    float[] images = npy("images_" + split + ".npy").floats();
    FeatureCache c = new FeatureCache(model.featureElements);
    c.add(model.extract(images), ints("labels_" + split + ".npy"));
    return c;
  }
}

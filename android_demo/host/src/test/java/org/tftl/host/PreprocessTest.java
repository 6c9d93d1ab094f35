package org.tftl.host;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.google.gson.JsonElement;
import com.google.gson.JsonObject;
import java.awt.image.BufferedImage;
import java.io.File;
import javax.imageio.ImageIO;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.tftl.core.Npy;
import org.tftl.core.Preprocess;

/**
 * Preprocessing against tftl's load_image (Pillow): bit-exact from the same decoded pixels, and
 * measured (not bit-exact) from the JDK's own JPEG decoder, which has no DCT scaling and a
 * different IDCT than libjpeg-turbo.
 */
class PreprocessTest {
  @BeforeAll
  static void need() {
    Work.require();
  }

  @Test
  void sameDecodedPixelsGiveExactlyPillowsResult() throws Exception {
    int i = 0;
    int scaled = 0;
    for (JsonElement e : Work.json("reference.json").getAsJsonArray("pillow")) {
      JsonObject c = e.getAsJsonObject();
      Npy.Array rgb = Work.npy("pre_" + i + "_rgb.npy");
      float[] want = Work.npy("pre_" + i + "_out.npy").floats();
      float[] got = Preprocess.fromDecoded(rgb.raw, rgb.shape[1], rgb.shape[0], c.get("full_width").getAsInt(),
          c.get("full_height").getAsInt(), c.get("raw_width").getAsInt(), c.get("raw_decoded_width").getAsInt(), 96);
      assertEquals(want.length, got.length);
      for (int k = 0; k < want.length; k++) {
        assertEquals(want[k], got[k], "image " + c.get("path") + " value " + k);
      }
      scaled += c.get("draft_scale").getAsInt() > 1 ? 1 : 0;
      i++;
    }
    assertTrue(i >= 8 && scaled >= 1, "cases " + i + ", drafted " + scaled);
  }

  @Test
  void jdkDecoderAgreesClosely() throws Exception {
    double sum = 0;
    double worst = 0;
    long n = 0;
    int i = 0;
    for (JsonElement e : Work.json("reference.json").getAsJsonArray("pillow")) {
      JsonObject c = e.getAsJsonObject();
      BufferedImage img = ImageIO.read(new File(c.get("path").getAsString()));
      int w = img.getWidth();
      int h = img.getHeight();
      byte[] rgb = Work.rgb(img);
      float[] got = Preprocess.fromPixels(rgb, w, h, 96);
      float[] want = Work.npy("pre_" + i + "_out.npy").floats();
      for (int k = 0; k < want.length; k++) {
        double d = Math.abs(got[k] - want[k]);
        sum += d;
        worst = Math.max(worst, d);
        n++;
      }
      i++;
    }
    double mean = sum / n;
    System.out.printf("preprocessing, JDK full decode vs Pillow draft decode: mean |diff| %.3f, max %.0f (0..255)%n",
        mean, worst);
    assertTrue(mean < 6.0, "mean abs difference " + mean);  // measured 3.1 on flowers5
  }
}

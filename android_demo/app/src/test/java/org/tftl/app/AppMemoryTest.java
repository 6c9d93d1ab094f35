package org.tftl.app;

import static org.junit.Assert.assertArrayEquals;
import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertNull;
import static org.junit.Assert.assertTrue;

import android.graphics.Bitmap;
import android.media.ExifInterface;
import java.io.File;
import java.io.RandomAccessFile;
import java.nio.ByteBuffer;
import java.nio.MappedByteBuffer;
import java.nio.file.Files;
import java.util.Arrays;
import java.util.Random;
import org.junit.Rule;
import org.junit.Test;
import org.junit.rules.TemporaryFolder;
import org.junit.runner.RunWith;
import org.robolectric.RobolectricTestRunner;
import org.robolectric.annotation.Config;

/**
 * Finding 6 (memory) of the Android layer, tested where it lives: LiteRtInterpreter hands TFLite a
 * read-only mapping of the stored model's flatbuffer (pages of the file, not a heap or direct
 * copy), and a decoded photo's bitmaps are recycled once their pixels are copied. (The view model's
 * side, size checks before reading and OutOfMemoryError at the task boundary, is in
 * ViewModelFlowTest.)
 */
@RunWith(RobolectricTestRunner.class)
@Config(sdk = 34, application = TftlApp.class)
public class AppMemoryTest {
  @Rule
  public TemporaryFolder tmp = new TemporaryFolder();

  @Test
  public void interpreterMapsTheStoredFlatbufferReadOnly() throws Exception {
    byte[] file = new byte[3 << 20];  // a flatbuffer, then the ZIP with tftl.json
    new Random(7).nextBytes(file);
    File stored = tmp.newFile("model.tflite");
    Files.write(stored.toPath(), file);
    int flatbuffer = 2 << 20;
    LiteRtInterpreter interpreter = new LiteRtInterpreter(stored, flatbuffer, 2);
    ByteBuffer model = ShadowNativeInterpreterWrapper.model;
    assertTrue("TFLite got a " + model.getClass().getName(), model instanceof MappedByteBuffer);
    assertTrue(model.isReadOnly());
    assertEquals(flatbuffer, model.capacity());
    byte[] seen = new byte[flatbuffer];
    model.duplicate().get(seen);
    assertArrayEquals(Arrays.copyOf(file, flatbuffer), seen);
    // A mapping shows the file's pages, so a later write to the file shows through; a copy (heap or
    // direct, which is a MappedByteBuffer subclass too) would keep the old bytes.
    byte[] patch = new byte[64];
    Arrays.fill(patch, (byte) 0x5a);
    try (RandomAccessFile f = new RandomAccessFile(stored, "rw")) {
      f.write(patch);
    }
    byte[] now = new byte[patch.length];
    model.duplicate().get(now);
    assertArrayEquals("the interpreter's model bytes are a copy, not the file's pages", patch, now);
    interpreter.close();
    assertNull(ShadowNativeInterpreterWrapper.model);
  }

  @Test
  public void decodedBitmapsAreRecycledOnceTheirPixelsAreCopied() {
    Bitmap decoded = Bitmap.createBitmap(6, 4, Bitmap.Config.ARGB_8888);
    decoded.eraseColor(0xff102030);
    Photo.Decoded d = AndroidPhoto.upright(decoded, ExifInterface.ORIENTATION_NORMAL, 12);
    assertTrue("the decoded bitmap was not recycled", decoded.isRecycled());
    assertEquals(6, d.width);
    assertEquals(4, d.height);
    assertEquals(12, d.rawWidth);
    assertEquals(6, d.rawDecodedWidth);
    assertArrayEquals(new byte[] {0x10, 0x20, 0x30, 0x10, 0x20, 0x30}, Arrays.copyOf(d.rgb, 6));

    // Turned by EXIF: a second bitmap. Robolectric's legacy bitmaps carry no pixels through a
    // matrix, so copying them fails here: both bitmaps must be recycled on that path as well.
    Bitmap turned = Bitmap.createBitmap(6, 4, Bitmap.Config.ARGB_8888);
    try {
      Photo.Decoded t = AndroidPhoto.upright(turned, ExifInterface.ORIENTATION_ROTATE_90, 12);
      assertEquals(4, t.width);
      assertEquals(6, t.height);
    } catch (RuntimeException copyFailed) {
      // the failure path: recycled all the same (asserted below)
    }
    assertTrue("the decoded bitmap was not recycled after turning it", turned.isRecycled());
  }
}

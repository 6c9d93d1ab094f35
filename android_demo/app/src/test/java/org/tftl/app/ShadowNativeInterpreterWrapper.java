package org.tftl.app;

import java.nio.ByteBuffer;
import org.robolectric.annotation.ClassName;
import org.robolectric.annotation.Implementation;
import org.robolectric.annotation.Implements;

/**
 * TFLite's native interpreter wrapper without its native library (arm64-only in the AAR): it keeps
 * the model buffer that {@code org.tensorflow.lite.Interpreter} was built from, so a test can see
 * what LiteRtInterpreter hands over (a read-only mapping of the stored file, not a heap copy).
 */
@Implements(className = "org.tensorflow.lite.NativeInterpreterWrapper", isInAndroidSdk = false)
public class ShadowNativeInterpreterWrapper {
  /** The buffer of the latest wrapper built. */
  static volatile ByteBuffer model;

  @Implementation
  protected void __constructor__(ByteBuffer buffer, @ClassName("org.tensorflow.lite.InterpreterImpl$Options") Object o) {
    model = buffer;
  }

  @Implementation
  protected String[] getSignatureKeys() {
    return new String[0];
  }

  @Implementation
  protected void close() {
    model = null;
  }
}

package org.tftl.core;

/** Bad input (a model file, checkpoint, image or setting): a one-line message naming the file and the fix. */
public class TftlException extends RuntimeException {
  public TftlException(String message) {
    super(message);
  }

  public TftlException(String message, Throwable cause) {
    super(message, cause);
  }
}

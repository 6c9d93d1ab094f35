package org.tftl.core;

/**
 * Bad input (a model file, checkpoint, image or setting): a one-line message naming the file and the fix.
 * {@link #kind} is the refusal class of contract/rules.json ("damaged", "labels", ...) for a model file.
 */
public class TftlException extends RuntimeException {
  public final String kind;

  public TftlException(String message) {
    this(message, "damaged", null);
  }

  public TftlException(String message, Throwable cause) {
    this(message, "damaged", cause);
  }

  public TftlException(String message, String kind) {
    this(message, kind, null);
  }

  public TftlException(String message, String kind, Throwable cause) {
    super(oneLine(message), cause);
    this.kind = kind;
  }

  /** The message on one line: wrapped library messages (Gson's, for one) can hold line breaks. */
  static String oneLine(String message) {
    return message == null ? null : message.replaceAll("\\s*[\\r\\n\\u000B\\f\\u0085\\u2028\\u2029]+\\s*", " ");
  }
}

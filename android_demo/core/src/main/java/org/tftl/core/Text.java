package org.tftl.core;

/** String.join, which Android has only from API 26 (the app's minSdk is 24). */
public final class Text {
  private Text() {}

  public static String join(String separator, Iterable<String> parts) {
    StringBuilder sb = new StringBuilder();
    boolean first = true;
    for (String p : parts) {
      if (!first) {
        sb.append(separator);
      }
      sb.append(p);
      first = false;
    }
    return sb.toString();
  }
}

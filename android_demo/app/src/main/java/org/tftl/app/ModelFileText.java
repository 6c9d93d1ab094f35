package org.tftl.app;

import java.io.File;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;

/** classes.txt: one class name a line. */
final class ModelFileText {
  private ModelFileText() {}

  static List<String> lines(File f) throws IOException {
    List<String> out = new ArrayList<>();
    for (String l : new String(org.tftl.core.Files2.readFile(f, 1 << 20), StandardCharsets.UTF_8).split("\n")) {
      if (!l.isEmpty()) {
        out.add(l);
      }
    }
    return out;
  }
}

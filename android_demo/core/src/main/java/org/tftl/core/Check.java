package org.tftl.core;

import com.google.gson.Gson;
import com.google.gson.JsonArray;
import com.google.gson.JsonElement;
import com.google.gson.JsonObject;
import com.google.gson.JsonParser;
import java.io.File;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;

/**
 * Does the Java core accept a model file? {@code android_demo/tools/check FILE} prints one line, "ok" or
 * "refused: reason", and exits 0 (accepted) or 2 (refused), like tftl-check and web_demo/tools/check.mjs.
 * {@code --vectors DIR} reads every file of DIR/manifest.json (python -m tftl.runtime.vectors) and prints
 * one JSON list of verdicts.
 */
public final class Check {
  private Check() {}

  /** {"verdict": "accepted" or the refusal class, "message"} for one file. */
  public static JsonObject verdict(File file) {
    JsonObject out = new JsonObject();
    try {
      ModelFile.read(file);
      out.addProperty("verdict", "accepted");
      out.addProperty("message", "");
    } catch (TftlException e) {
      out.addProperty("verdict", e.kind);
      out.addProperty("message", e.getMessage());
    } catch (IOException e) {
      out.addProperty("verdict", "unreadable");
      out.addProperty("message", "model file " + file + " cannot be read (" + e.getMessage() + ")");
    }
    return out;
  }

  /** The verdict of every file a vectors manifest lists. */
  public static JsonArray vectors(File dir) throws IOException {
    String text = new String(Files.readAllBytes(new File(dir, "manifest.json").toPath()), StandardCharsets.UTF_8);
    JsonArray out = new JsonArray();
    for (JsonElement c : JsonParser.parseString(text).getAsJsonArray()) {
      String file = c.getAsJsonObject().get("file").getAsString();
      JsonObject v = verdict(new File(dir, file));
      v.addProperty("file", file);
      out.add(v);
    }
    return out;
  }

  public static void main(String[] args) throws IOException {
    if (args.length == 2 && args[0].equals("--vectors")) {
      System.out.println(new Gson().toJson(vectors(new File(args[1]))));
      return;
    }
    if (args.length != 1 || args[0].startsWith("-")) {
      System.err.println("usage: android_demo/tools/check FILE | --vectors DIR");
      System.exit(2);
    }
    JsonObject v = verdict(new File(args[0]));
    boolean ok = v.get("verdict").getAsString().equals("accepted");
    System.out.println(ok ? "ok" : "refused: " + v.get("message").getAsString());
    System.exit(ok ? 0 : 2);
  }
}

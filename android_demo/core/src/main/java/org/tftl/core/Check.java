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

  /** A read that either passes or throws: a model file, or a checkpoint checked against its model. */
  private interface Read {
    void run() throws IOException;
  }

  /** {"verdict": "accepted", or the refusal class of the TftlException {@code read} throws, "message"}. */
  private static JsonObject judge(Read read, String what) {
    JsonObject out = new JsonObject();
    try {
      read.run();
      out.addProperty("verdict", "accepted");
      out.addProperty("message", "");
    } catch (TftlException e) {
      out.addProperty("verdict", e.kind);
      out.addProperty("message", e.getMessage());
    } catch (IOException e) {
      out.addProperty("verdict", "unreadable");
      out.addProperty("message", what + " cannot be read (" + e.getMessage() + ")");
    }
    return out;
  }

  /** {"verdict": "accepted" or the refusal class, "message"} for one file. */
  public static JsonObject verdict(File file) {
    return judge(new Read() {
      @Override
      public void run() throws IOException {
        ModelFile.read(file);
      }
    }, "model file " + file);
  }

  /**
   * {"verdict", "message"}: whether the app could resume training {@code model} from {@code checkpoint}:
   * the checkpoint's archive and metadata, its arrays against the model's restore signature (every
   * input, any number type, finite), then the trainer format, model hash and labels.
   */
  public static JsonObject checkpointVerdict(File model, File checkpoint) {
    return judge(new Read() {
      @Override
      public void run() throws IOException {
      ModelFile mf = ModelFile.read(model);
      Checkpoint c = Checkpoint.load(checkpoint, mf.modelHash(), mf.labels);
      Tflite.Signature restore = Tflite.signatures(mf.data, mf.flatbufferLength).get("restore");
      if (restore != null && !c.state.keySet().equals(restore.inputs.keySet())) {
        throw new TftlException("checkpoint " + checkpoint + " does not fit the model (other tensor names) — it belongs "
            + "to another model", "state");
      }
      ModelState.checkArrays(c.state, restore, false, "checkpoint " + checkpoint);
      }
    }, "checkpoint " + checkpoint);
  }

  /** The verdict of every file a vectors manifest lists (a checkpoint with its "model"). */
  public static JsonArray vectors(File dir) throws IOException {
    String text = new String(Files.readAllBytes(new File(dir, "manifest.json").toPath()), StandardCharsets.UTF_8);
    JsonArray out = new JsonArray();
    for (JsonElement c : JsonParser.parseString(text).getAsJsonArray()) {
      String file = c.getAsJsonObject().get("file").getAsString();
      JsonElement model = c.getAsJsonObject().get("model");
      JsonObject v = model == null ? verdict(new File(dir, file))
          : checkpointVerdict(new File(dir, model.getAsString()), new File(dir, file));
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
    boolean resume = args.length == 3 && args[1].equals("--checkpoint");
    if (!resume && (args.length != 1 || args[0].startsWith("-"))) {
      System.err.println("usage: android_demo/tools/check FILE | FILE --checkpoint CHECKPOINT | --vectors DIR");
      System.exit(2);
    }
    JsonObject v = resume ? checkpointVerdict(new File(args[0]), new File(args[2])) : verdict(new File(args[0]));
    boolean ok = v.get("verdict").getAsString().equals("accepted");
    System.out.println(ok ? "ok" : "refused: " + v.get("message").getAsString());
    System.exit(ok ? 0 : 2);
  }
}

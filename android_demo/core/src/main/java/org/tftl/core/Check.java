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
 * one JSON list of verdicts. {@code FILE --recipe N} prints the file's recipe resolved for N photos, and
 * {@code FILE --settings N} the settings the trainer records for such a run (augment and cache_views as
 * used), and {@code --probe VECTORS} the fits and resolved recipes of contract/vectors/probe.json, as this
 * core makes them (tests/test_conformance.py compares them with Python's and the browser's).
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

  /** {"probes": [{"l2", "cv_accuracy", "kernel", "bias"}], "recipes": [resolved]} for probe.json's cases. */
  public static JsonObject probe(JsonObject vectors) {
    JsonArray probes = new JsonArray();
    for (JsonElement e : vectors.getAsJsonArray("probes")) {
      JsonObject p = e.getAsJsonObject();
      JsonArray rows = p.getAsJsonArray("x");
      int n = rows.size();
      int d = rows.get(0).getAsJsonArray().size();
      double[] x = new double[n * d];
      int[] y = new int[n];
      for (int i = 0; i < n; i++) {
        for (int q = 0; q < d; q++) {
          x[i * d + q] = rows.get(i).getAsJsonArray().get(q).getAsDouble();
        }
        y[i] = p.getAsJsonArray("y").get(i).getAsInt();
      }
      Probe.Fit fit = Probe.fitHead(x, y, n, d, p.get("classes").getAsInt());
      JsonObject out = new JsonObject();
      out.addProperty("l2", fit.l2);
      Gson gson = new Gson();
      out.add("cv_accuracy", gson.toJsonTree(fit.cvAccuracy));
      out.add("kernel", gson.toJsonTree(fit.kernel));
      out.add("bias", gson.toJsonTree(fit.bias));
      probes.add(out);
    }
    JsonArray recipes = new JsonArray();
    for (JsonElement e : vectors.getAsJsonArray("recipes")) {
      JsonObject r = e.getAsJsonObject();
      JsonElement raw = r.get("recipe");
      java.util.List<String> names = new java.util.ArrayList<>();
      for (JsonElement v : r.getAsJsonArray("state_names")) {  // no lambdas: dx targets API 24
        names.add(v.getAsString());
      }
      Recipe recipe = Recipe.parse(raw, names, "probe.json");
      recipes.add(recipe.resolved(r.get("images").getAsInt(), r.get("batch").getAsInt()));
    }
    JsonObject out = new JsonObject();
    out.add("probes", probes);
    out.add("recipes", recipes);
    return out;
  }

  /**
   * The settings {@link Trainer} records for a run on {@code images} photos of a file (tftl-train's
   * checkpoint settings), from {@link Trainer.Config#of} and a training cache shaped as the app
   * builds it: the recipe's views per photo (rows of one element: the settings never read them).
   */
  static JsonObject trainSettings(ModelMetadata meta, int images) {
    Trainer.Config cfg = Trainer.Config.of(meta.recipe, images, meta.batch);
    FeatureCache train = new FeatureCache(1, cfg.augment ? cfg.cacheViews : 1);
    train.add(new float[images * train.views], new int[images]);
    int total = (images + meta.batch - 1) / meta.batch * cfg.epochs;
    return Trainer.settings(cfg, train, meta.batch, meta.recipe.warmupFor(total), 0);
  }

  public static void main(String[] args) throws IOException {
    if (args.length == 2 && args[0].equals("--vectors")) {
      System.out.println(new Gson().toJson(vectors(new File(args[1]))));
      return;
    }
    if (args.length == 2 && args[0].equals("--probe")) {
      String text = new String(Files.readAllBytes(new File(args[1]).toPath()), StandardCharsets.UTF_8);
      System.out.println(new Gson().toJson(probe(JsonParser.parseString(text).getAsJsonObject())));
      return;
    }
    if (args.length == 3 && args[1].equals("--recipe")) {
      ModelMetadata meta = ModelFile.read(new File(args[0])).meta;
      System.out.println(new Gson().toJson(meta.recipe.resolved(Integer.parseInt(args[2]), meta.batch)));
      return;
    }
    if (args.length == 3 && args[1].equals("--settings")) {
      ModelMetadata meta = ModelFile.read(new File(args[0])).meta;
      System.out.println(new Gson().toJson(trainSettings(meta, Integer.parseInt(args[2]))));
      return;
    }
    boolean resume = args.length == 3 && args[1].equals("--checkpoint");
    if (!resume && (args.length != 1 || args[0].startsWith("-"))) {
      System.err.println("usage: android_demo/tools/check FILE | FILE --checkpoint CHECKPOINT | FILE --recipe N"
          + " | FILE --settings N | --vectors DIR | --probe VECTORS.json");
      System.exit(2);
    }
    JsonObject v = resume ? checkpointVerdict(new File(args[0]), new File(args[2])) : verdict(new File(args[0]));
    boolean ok = v.get("verdict").getAsString().equals("accepted");
    System.out.println(ok ? "ok" : "refused: " + v.get("message").getAsString());
    System.exit(ok ? 0 : 2);
  }
}

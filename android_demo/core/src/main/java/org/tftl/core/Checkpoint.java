package org.tftl.core;

import com.google.gson.Gson;
import com.google.gson.JsonElement;
import com.google.gson.JsonObject;
import com.google.gson.JsonParser;
import java.io.File;
import java.io.FileInputStream;
import java.io.IOException;
import java.io.InputStream;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * tftl-train's checkpoint (tftl/runtime/checkpoint.py): an .npz of the model's state tensors plus
 * the JSON metadata as a uint8 array under {@code __meta__}; no pickles. Written atomically, so a
 * phone that dies mid-save keeps the previous checkpoint. The metadata has the keys checkpoint.py
 * TrainState.to_meta writes (format tftl-train-1, model_hash, labels, epoch, position, global_step,
 * rng_state, partial, settings, history, skipped), so either side resumes the other's file.
 */
public final class Checkpoint {
  public static final String FORMAT = "tftl-train-1";
  public static final String META_KEY = "__meta__";
  public static final String NAME = "checkpoint.npz";

  public final Map<String, Npy.Array> state;
  public final JsonObject meta;

  public Checkpoint(Map<String, Npy.Array> state, JsonObject meta) {
    this.state = state;
    this.meta = meta;
  }

  /** Writes the checkpoint to {@code file} atomically. */
  public void save(File file) throws IOException {
    Blocking.check(Blocking.Kind.CHECKPOINT, "saving " + file);
    if (state.containsKey(META_KEY)) {
      throw new IllegalArgumentException("array name " + META_KEY + " is reserved for checkpoint metadata");
    }
    Map<String, Npy.Array> out = new LinkedHashMap<>(state);
    // Gson refuses NaN and infinity by default, as json.dumps(allow_nan=False).
    out.put(META_KEY, Npy.Array.ofBytes(new com.google.gson.GsonBuilder().serializeNulls().create().toJson(ModelFile.sorted(meta)).getBytes(StandardCharsets.UTF_8)));
    Files2.writeAtomically(file, Npy.writeNpz(out));
  }

  /**
   * Reads a checkpoint and checks it belongs to this model and these labels (check_compatible), in
   * tftl/runtime/checkpoint.py's order: the archive, the metadata's fields (one set of rules,
   * {@link #metaError}), then the trainer format, the model hash and the labels.
   *
   * @throws TftlException with the file and the fix for a missing, damaged ("damaged") or foreign
   *     ("foreign") checkpoint
   */
  public static Checkpoint load(File file, String modelHash, List<String> labels) throws IOException {
    Blocking.check(Blocking.Kind.CHECKPOINT, "loading " + file);
    if (!file.isFile()) {
      throw new TftlException("checkpoint " + file + " does not exist — check the path or start without it");
    }
    String damaged = "checkpoint " + file + " is truncated or not a tftl checkpoint — delete it and train again";
    Map<String, Npy.Array> arrays;
    try (InputStream in = new FileInputStream(file)) {
      arrays = Npy.readNpz(Files2.readBounded(in, ModelFile.MAX_FILE_BYTES, "checkpoint " + file), ModelFile.MAX_FILE_BYTES);
    } catch (IOException | RuntimeException e) {
      throw new TftlException(damaged + " (" + e.getMessage() + ")", e);
    }
    Npy.Array raw = arrays == null ? null : arrays.remove(META_KEY);
    if (raw == null || !raw.descr.equals("|u1") || raw.shape.length != 1) {
      throw new TftlException(damaged);
    }
    JsonObject meta;
    try {
      JsonElement e = JsonParser.parseString(ModelFile.utf8(raw.raw));
      if (!e.isJsonObject()) {
        throw new TftlException(damaged);
      }
      meta = e.getAsJsonObject();
    } catch (com.google.gson.JsonParseException | java.nio.charset.CharacterCodingException e) {
      throw new TftlException(damaged + " (bad metadata: " + e.getMessage() + ")");
    }
    String bad = metaError(meta);
    if (bad != null) {
      throw new TftlException("checkpoint " + file + " has damaged metadata (field '" + bad
          + "' is missing or has the wrong type) — delete it and train again");
    }
    return check(file, arrays, meta, modelHash, labels);
  }

  private static Checkpoint check(File file, Map<String, Npy.Array> arrays, JsonObject meta, String modelHash,
      List<String> labels) {
    String hint = "remove it or pick another checkpoint folder";
    if (!FORMAT.equals(string(meta.get("format")))) {
      throw new TftlException("checkpoint " + file + " is not a tftl-train checkpoint — " + hint, "foreign");
    }
    String saved = string(meta.get("model_hash"));
    if (!modelHash.equals(saved)) {
      throw new TftlException("checkpoint " + file + " was written for another model (hash " + saved + ", not "
          + modelHash + ") — " + hint, "foreign");
    }
    List<String> savedLabels = new ArrayList<>();
    for (JsonElement l : meta.getAsJsonArray("labels")) {
      savedLabels.add(l.getAsString());
    }
    if (!savedLabels.equals(labels)) {
      throw new TftlException("checkpoint " + file + " was written for labels " + savedLabels + " but the app has "
          + labels + " — " + hint, "foreign");
    }
    return new Checkpoint(arrays, meta);
  }

  private static String string(JsonElement e) {
    return e != null && e.isJsonPrimitive() && e.getAsJsonPrimitive().isString() ? e.getAsString() : null;
  }

  private static final List<String> REQUIRED = Arrays.asList("model_hash", "labels", "epoch", "position", "global_step");

  /**
   * The first metadata key that is missing or has a wrong type, or null: checkpoint.meta_error's rules
   * (required keys in a tftl-train-1 checkpoint; optional keys typed when present and not null).
   * rng_state is checked for its shape only (a numpy bit-generator state this app ignores).
   */
  static String metaError(JsonObject meta) {
    boolean train = FORMAT.equals(string(meta.get("format")));
    for (String key : Arrays.asList("model_hash", "labels", "epoch", "position", "global_step", "rng_state", "partial",
        "settings", "history", "skipped")) {
      JsonElement v = meta.get(key);
      boolean present = v != null && !v.isJsonNull();
      if ((train && REQUIRED.contains(key) || present) && !(v != null && valid(key, v))) {
        return key;
      }
    }
    return null;
  }

  private static boolean valid(String key, JsonElement v) {
    switch (key) {
      case "model_hash":
        return string(v) != null;
      case "labels":
        return allStrings(v);
      case "epoch":
      case "position":
      case "global_step":
        return nonNegativeInteger(v);
      case "rng_state":
        return v.isJsonObject() && string(v.getAsJsonObject().get("bit_generator")) != null;
      case "partial":
        return v.isJsonObject() && validPartial(v.getAsJsonObject());
      case "settings":
        return v.isJsonObject();
      case "history":
        return allObjects(v);
      default:  // skipped: {sample: reason}
        return v.isJsonObject() && allStrings(v.getAsJsonObject().entrySet());
    }
  }

  private static boolean validPartial(JsonObject p) {
    for (Map.Entry<String, JsonElement> e : p.entrySet()) {
      JsonElement v = e.getValue();
      boolean ok;
      switch (e.getKey()) {
        case "loss_sum":
        case "train_seconds":
          ok = v.isJsonPrimitive() && v.getAsJsonPrimitive().isNumber() && Double.isFinite(v.getAsDouble());
          break;
        case "correct":
        case "seen":
          ok = nonNegativeInteger(v);
          break;
        case "skipped":
          ok = allStrings(v);
          break;
        default:
          ok = true;
      }
      if (!ok) {
        return false;
      }
    }
    return true;
  }

  /** A JSON array of strings. (Loops, not streams with lambdas: the APK's dexer takes Java 8 bytecode without them.) */
  private static boolean allStrings(JsonElement v) {
    if (!v.isJsonArray()) {
      return false;
    }
    for (JsonElement x : v.getAsJsonArray()) {
      if (string(x) == null) {
        return false;
      }
    }
    return true;
  }

  private static boolean allStrings(Iterable<Map.Entry<String, JsonElement>> entries) {
    for (Map.Entry<String, JsonElement> e : entries) {
      if (string(e.getValue()) == null) {
        return false;
      }
    }
    return true;
  }

  private static boolean allObjects(JsonElement v) {
    if (!v.isJsonArray()) {
      return false;
    }
    for (JsonElement x : v.getAsJsonArray()) {
      if (!x.isJsonObject()) {
        return false;
      }
    }
    return true;
  }

  private static boolean nonNegativeInteger(JsonElement v) {
    return v.isJsonPrimitive() && v.getAsJsonPrimitive().isNumber() && v.getAsString().matches("\\d{1,15}");
  }
}

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
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * tftl-train's checkpoint (tftl/runtime/checkpoint.py): an .npz of the model's state tensors plus
 * the JSON metadata as a uint8 array under {@code __meta__}; no pickles. Written atomically, so a
 * phone that dies mid-save keeps the previous checkpoint. The metadata has the keys save_ckpt in
 * trainer.py writes (format tftl-train-1, model_hash, labels, epoch, position, global_step,
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
    if (state.containsKey(META_KEY)) {
      throw new IllegalArgumentException("array name " + META_KEY + " is reserved for checkpoint metadata");
    }
    Map<String, Npy.Array> out = new LinkedHashMap<>(state);
    // Gson refuses NaN and infinity by default, as json.dumps(allow_nan=False).
    out.put(META_KEY, Npy.Array.ofBytes(new com.google.gson.GsonBuilder().serializeNulls().create().toJson(ModelFile.sorted(meta)).getBytes(StandardCharsets.UTF_8)));
    Files2.writeAtomically(file, Npy.writeNpz(out));
  }

  /**
   * Reads a checkpoint and checks it belongs to this model and these labels (check_compatible).
   *
   * @throws TftlException with the file and the fix for a missing, damaged or foreign checkpoint
   */
  public static Checkpoint load(File file, String modelHash, List<String> labels) throws IOException {
    if (!file.isFile()) {
      throw new TftlException("checkpoint " + file + " does not exist — check the path or start without it");
    }
    String damaged = "checkpoint " + file + " is truncated or not a tftl checkpoint — delete it and train again";
    Map<String, Npy.Array> arrays;
    try (InputStream in = new FileInputStream(file)) {
      arrays = Npy.readNpz(Files2.readBounded(in, ModelFile.MAX_FILE_BYTES, "checkpoint " + file), ModelFile.MAX_FILE_BYTES);
    } catch (IOException e) {
      throw new TftlException(damaged + " (" + e.getMessage() + ")", e);
    }
    Npy.Array raw = arrays == null ? null : arrays.remove(META_KEY);
    if (raw == null || !raw.descr.equals("|u1") || raw.shape.length != 1) {
      throw new TftlException(damaged);
    }
    JsonObject meta;
    try {
      JsonElement e = JsonParser.parseString(new String(raw.raw, StandardCharsets.UTF_8));
      if (!e.isJsonObject()) {
        throw new TftlException(damaged);
      }
      meta = e.getAsJsonObject();
    } catch (com.google.gson.JsonParseException e) {
      throw new TftlException(damaged + " (bad metadata: " + e.getMessage() + ")");
    }
    try {
      return check(file, arrays, meta, modelHash, labels);
    } catch (TftlException e) {
      throw e;
    } catch (RuntimeException e) {  // metadata fields of the wrong JSON types
      throw new TftlException(damaged + " (bad metadata: " + e.getMessage() + ")", e);
    }
  }

  private static Checkpoint check(File file, Map<String, Npy.Array> arrays, JsonObject meta, String modelHash,
      List<String> labels) {
    String hint = "remove it or pick another checkpoint folder";
    if (!meta.has("format") || !FORMAT.equals(meta.get("format").getAsString())) {
      throw new TftlException("checkpoint " + file + " is not a tftl-train checkpoint — " + hint);
    }
    String saved = meta.has("model_hash") ? meta.get("model_hash").getAsString() : null;
    if (!modelHash.equals(saved)) {
      throw new TftlException("checkpoint " + file + " was written for another model (hash " + saved + ", not "
          + modelHash + ") — " + hint);
    }
    List<String> savedLabels = new ArrayList<>();
    if (meta.has("labels") && meta.get("labels").isJsonArray()) {
      meta.getAsJsonArray("labels").forEach(l -> savedLabels.add(l.getAsString()));
    }
    if (!savedLabels.equals(labels)) {
      throw new TftlException("checkpoint " + file + " was written for labels " + savedLabels + " but the app has "
          + labels + " — " + hint);
    }
    for (String key : new String[] {"epoch", "position", "global_step"}) {
      if (!meta.has(key) || meta.get(key).getAsInt() < 0) {
        throw new TftlException("checkpoint " + file + " has no valid " + key + " — delete it and train again");
      }
    }
    return new Checkpoint(arrays, meta);
  }
}

package org.tftl.core;

import com.google.gson.JsonArray;
import com.google.gson.JsonElement;
import com.google.gson.JsonObject;
import java.util.ArrayList;
import java.util.Collections;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;

/**
 * The typed tftl.json of contract tftl-3 (tftl/runtime/contract.py), validated before anything is
 * allocated from it. A tftl-1 file is refused with a one-line "export it again" message: its
 * {@code save} has no input, which Android's runSignature refuses, and its scalar opt_step breaks
 * CompiledModel. A tftl-2 file (scalar learning_rate and loss) is read: runSignature resizes an
 * input only when its shape differs and never a ByteBuffer input, so the aarch64 scalar-resize
 * crash of LiteRT's Python wrapper does not reach this reader.
 */
public final class ModelMetadata {
  public static final String FORMAT = "tftl-3";
  /** The formats this reader accepts: tftl-2 and tftl-3 differ only in the rank of learning_rate and loss. */
  public static final List<String> FORMATS = Collections.unmodifiableList(java.util.Arrays.asList("tftl-2", FORMAT));
  public static final String EXPORT_HINT = "export it again with python -m converters.export";
  static final int MAX_IMAGE_SIZE = 2048;
  static final int MAX_BATCH = 1024;
  static final int MAX_LABELS = 100_000;
  static final long MAX_FEATURE_ELEMENTS = 1L << 26;
  static final int MAX_STATE_TENSORS = 100_000;
  public static final List<String> GROUPS = Collections.unmodifiableList(java.util.Arrays.asList("trainable", "bn_statistics", "optimizer"));

  public final JsonObject raw;
  public final String model;
  public final String scheme;
  public final int imageSize;
  public final int batch;
  public final int numLabels;
  public final int[] featureShape;
  public final String trunkEnd;
  public final List<String> stateNames;
  public final Map<String, List<String>> stateGroups;
  public final String contentHash;
  public final boolean trainedState;

  private ModelMetadata(JsonObject raw, String where) {
    this.raw = raw;
    JsonElement fmt = raw.get("format");
    String format = fmt != null && fmt.isJsonPrimitive() ? fmt.getAsString() : String.valueOf(fmt);
    if (!FORMATS.contains(format)) {
      throw new TftlException(where + " has model-file format " + format + "; this app reads " + String.join(", ", FORMATS) + " — "
          + EXPORT_HINT + " (tftl 0.1 or later)");
    }
    model = string(raw, "model", where);
    scheme = string(raw, "scheme", where);
    imageSize = integer(raw, "image_size", 8, MAX_IMAGE_SIZE, where);
    batch = integer(raw, "batch", 1, MAX_BATCH, where);
    numLabels = integer(raw, "num_labels", 1, MAX_LABELS, where);
    featureShape = featureShape(raw, imageSize, where);
    JsonElement te = raw.get("trunk_end");
    if (te != null && !te.isJsonNull() && !(te.isJsonPrimitive() && te.getAsJsonPrimitive().isString())) {
      throw bad(where, "field 'trunk_end' must be a layer name or null");
    }
    trunkEnd = te == null || te.isJsonNull() ? null : te.getAsString();
    stateNames = names(raw.get("state_names"), where, "state_names");
    stateGroups = groups(raw.get("state_groups"), stateNames, where);
    contentHash = string(raw, "content_hash", where);
    JsonElement ts = raw.get("trained_state");
    if (ts != null && !(ts.isJsonPrimitive() && ts.getAsJsonPrimitive().isBoolean())) {
      throw bad(where, "field 'trained_state' must be true or false");
    }
    trainedState = ts != null && ts.getAsBoolean();
  }

  /** Validates tftl.json; {@code where} names the file in messages. */
  public static ModelMetadata parse(JsonObject raw, String where) {
    return new ModelMetadata(raw, where);
  }

  public boolean hasTrunk() {
    return trunkEnd != null && !trunkEnd.isEmpty();
  }

  public int featureElements() {
    int n = 1;
    for (int d : featureShape) {
      n *= d;
    }
    return n;
  }

  private static TftlException bad(String where, String what) {
    return new TftlException(where + ": tftl.json " + what + " — " + EXPORT_HINT);
  }

  private static String string(JsonObject o, String key, String where) {
    JsonElement e = o.get(key);
    if (e == null || !e.isJsonPrimitive() || !e.getAsJsonPrimitive().isString() || e.getAsString().isEmpty()) {
      throw bad(where, "field '" + key + "' must be a non-empty string, got " + e);
    }
    return e.getAsString();
  }

  private static int integer(JsonObject o, String key, int lo, int hi, String where) {
    JsonElement e = o.get(key);
    if (e == null || !e.isJsonPrimitive() || !e.getAsJsonPrimitive().isNumber()) {
      throw bad(where, "field '" + key + "' must be an integer in " + lo + ".." + hi + ", got " + e);
    }
    double v = e.getAsDouble();
    if (v != Math.rint(v) || v < lo || v > hi) {
      throw bad(where, "field '" + key + "' must be an integer in " + lo + ".." + hi + ", got " + e);
    }
    return (int) v;
  }

  private static int[] featureShape(JsonObject o, int imageSize, String where) {
    JsonElement e = o.get("feature_shape");
    if (e == null || e.isJsonNull()) {
      return new int[] {imageSize, imageSize, 3};
    }
    String msg = "field 'feature_shape' must be 1-4 positive integers (at most " + MAX_FEATURE_ELEMENTS
        + " elements), got " + e;
    if (!e.isJsonArray() || e.getAsJsonArray().size() < 1 || e.getAsJsonArray().size() > 4) {
      throw bad(where, msg);
    }
    JsonArray a = e.getAsJsonArray();
    int[] shape = new int[a.size()];
    long n = 1;
    for (int i = 0; i < shape.length; i++) {
      JsonElement d = a.get(i);
      if (!d.isJsonPrimitive() || !d.getAsJsonPrimitive().isNumber()) {
        throw bad(where, msg);
      }
      double v = d.getAsDouble();
      if (v != Math.rint(v) || v < 1 || v > (1 << 20)) {
        throw bad(where, msg);
      }
      shape[i] = (int) v;
      n *= shape[i];
    }
    if (n > MAX_FEATURE_ELEMENTS) {
      throw bad(where, msg);
    }
    return shape;
  }

  private static List<String> names(JsonElement e, String where, String key) {
    if (e == null) {
      return Collections.emptyList();
    }
    if (!e.isJsonArray() || e.getAsJsonArray().size() > MAX_STATE_TENSORS) {
      throw bad(where, "field '" + key + "' must be a list of names");
    }
    List<String> out = new ArrayList<>();
    for (JsonElement n : e.getAsJsonArray()) {
      if (!n.isJsonPrimitive() || !n.getAsJsonPrimitive().isString() || n.getAsString().isEmpty()) {
        throw bad(where, "field '" + key + "' must be a list of names");
      }
      out.add(n.getAsString());
    }
    return Collections.unmodifiableList(out);
  }

  private static Map<String, List<String>> groups(JsonElement e, List<String> names, String where) {
    String msg = "'state_groups' must split 'state_names' into " + Text.join(", ", GROUPS);
    if (e == null || !e.isJsonObject() || !e.getAsJsonObject().keySet().equals(new HashSet<>(GROUPS))) {
      throw bad(where, msg);
    }
    Map<String, List<String>> out = new LinkedHashMap<>();
    List<String> all = new ArrayList<>();
    for (String g : GROUPS) {
      List<String> members = names(e.getAsJsonObject().get(g), where, "state_groups." + g);
      out.put(g, members);
      all.addAll(members);
    }
    Set<String> seen = new HashSet<>(all);
    if (all.size() != names.size() || !seen.equals(new HashSet<>(names))) {
      throw bad(where, msg);
    }
    return Collections.unmodifiableMap(out);
  }
}

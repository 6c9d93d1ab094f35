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
  public final int blocks;
  /** Running-statistics momentum of the trained BatchNorms (contract.DEFAULT_BN_MOMENTUM when absent). */
  public final double bnMomentum;
  static final double DEFAULT_BN_MOMENTUM = 0.99;
  /** How to fine-tune the file (tftl.json recipe; Recipe.LEGACY when absent). */
  public final Recipe recipe;

  private ModelMetadata(JsonObject raw, String where) {
    this.raw = raw;
    JsonElement fmt = raw.get("format");
    String format = fmt != null && fmt.isJsonPrimitive() && fmt.getAsJsonPrimitive().isString() ? fmt.getAsString() : String.valueOf(fmt);
    if (format.equals("tftl-1")) {
      throw new TftlException(where + " is a tftl-1 file, which this app cannot train (save() has no input) — "
          + EXPORT_HINT + " to get " + FORMAT, "format");
    }
    if (!FORMATS.contains(format)) {
      throw new TftlException(where + " has model-file format " + format + "; this app reads " + String.join(", ", FORMATS) + " — "
          + EXPORT_HINT + " (tftl 0.1 or later)", "format");
    }
    imageSize = integer(raw, "image_size", 8, MAX_IMAGE_SIZE, where, null);
    stateNames = names(raw.get("state_names"), where, "state_names");
    JsonElement groups = raw.get("state_groups");
    stateGroups = groups == null || groups.isJsonNull() ? groupNames(stateNames) : groups(groups, stateNames, where);
    JsonElement te = raw.get("trunk_end");
    if (te != null && !te.isJsonNull() && !(te.isJsonPrimitive() && te.getAsJsonPrimitive().isString())) {
      throw bad(where, "field 'trunk_end' must be a layer name or null");
    }
    trunkEnd = te == null || te.isJsonNull() ? null : te.getAsString();
    JsonElement ts = raw.get("trained_state");
    if (ts != null && !(ts.isJsonPrimitive() && ts.getAsJsonPrimitive().isBoolean())) {
      throw bad(where, "field 'trained_state' must be true or false");
    }
    trainedState = ts != null && ts.getAsBoolean();
    contentHash = string(raw, "content_hash", where);
    if (!contentHash.matches("[0-9a-f]{64}")) {
      throw bad(where, "field 'content_hash' must be 64 lowercase hex digits (sha256)");
    }
    checkOptional(raw, where);
    JsonElement m = raw.get("bn_momentum");
    if (m != null && !(m.isJsonPrimitive() && m.getAsJsonPrimitive().isNumber()
        && m.getAsDouble() >= 0 && m.getAsDouble() < 1)) {
      throw bad(where, "field 'bn_momentum' must be a number in [0, 1), got " + m);
    }
    bnMomentum = m == null ? DEFAULT_BN_MOMENTUM : m.getAsDouble();
    model = string(raw, "model", where);
    scheme = string(raw, "scheme", where);
    blocks = integer(raw, "blocks", 0, 1000, where, 0);
    batch = integer(raw, "batch", 1, MAX_BATCH, where, null);
    JsonElement micro = raw.get("micro_batch");  // the optional extract_micro signature's batch
    if (micro != null && !micro.isJsonNull()) {
      integer(raw, "micro_batch", 1, batch, where, null);
    }
    numLabels = integer(raw, "num_labels", 1, MAX_LABELS, where, null);
    featureShape = featureShape(raw, imageSize, where);
    recipe = Recipe.parse(raw.get("recipe"), stateNames, where);
  }

  /** The optional fields only checked for their types: preprocessing ({name: text}) and signatures ([name]). */
  private static void checkOptional(JsonObject raw, String where) {
    JsonElement pre = raw.get("preprocessing");
    if (pre != null && !pre.isJsonNull()) {
      boolean ok = pre.isJsonObject() && allText(pre.getAsJsonObject().asMap().values());
      if (!ok) {
        throw bad(where, "field 'preprocessing' must map names to text");
      }
    }
    JsonElement sigs = raw.get("signatures");
    if (sigs != null && !sigs.isJsonNull()) {
      boolean ok = sigs.isJsonArray() && allText(sigs.getAsJsonArray().asList());
      if (!ok) {
        throw bad(where, "field 'signatures' must be a list of names");
      }
    }
  }

  private static boolean allText(Iterable<JsonElement> values) {
    for (JsonElement v : values) {
      if (!(v.isJsonPrimitive() && v.getAsJsonPrimitive().isString())) {
        return false;
      }
    }
    return true;
  }

  /** contract.group_of: the state group of a tensor name, by the naming rule (files without state_groups). */
  public static String groupOf(String name) {
    if (name.equals("opt_step") || name.startsWith("opt_m__") || name.startsWith("opt_v__")) {
      return "optimizer";
    }
    return name.endsWith("__moving_mean") || name.endsWith("__moving_variance") ? "bn_statistics" : "trainable";
  }

  private static Map<String, List<String>> groupNames(List<String> names) {
    Map<String, List<String>> out = new LinkedHashMap<>();
    for (String g : GROUPS) {
      out.put(g, new ArrayList<String>());
    }
    for (String n : names) {
      out.get(groupOf(n)).add(n);
    }
    return Collections.unmodifiableMap(out);
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

  static TftlException bad(String where, String what) {
    return new TftlException(where + ": tftl.json " + what + " — " + EXPORT_HINT, "metadata");
  }

  private static String string(JsonObject o, String key, String where) {
    JsonElement e = o.get(key);
    if (e == null || !e.isJsonPrimitive() || !e.getAsJsonPrimitive().isString() || e.getAsString().isEmpty()) {
      throw bad(where, "field '" + key + "' must be a non-empty string, got " + e);
    }
    return e.getAsString();
  }

  static int integer(JsonObject o, String key, int lo, int hi, String where, Integer dflt) {
    JsonElement e = o.get(key);
    String msg = "field '" + key + "' must be an integer in " + lo + ".." + hi + ", got " + e;
    if (e == null && dflt != null) {
      return dflt;
    }
    if (e == null || !isInteger(e)) {
      throw bad(where, msg);
    }
    double v = e.getAsDouble();
    if (v < lo || v > hi) {
      throw bad(where, msg);
    }
    return (int) v;
  }

  /** A JSON integer as Python's json reads one: a number written without a fraction or exponent. */
  private static boolean isInteger(JsonElement e) {
    return e.isJsonPrimitive() && e.getAsJsonPrimitive().isNumber() && e.getAsString().matches("-?\\d{1,12}");
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
      if (!isInteger(d)) {
        throw bad(where, msg);
      }
      double v = d.getAsDouble();
      if (v < 1 || v > (1 << 20)) {
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

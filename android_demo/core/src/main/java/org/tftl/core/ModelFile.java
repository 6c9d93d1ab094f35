package org.tftl.core;

import com.google.gson.Gson;
import com.google.gson.GsonBuilder;
import com.google.gson.JsonElement;
import com.google.gson.JsonObject;
import com.google.gson.JsonParser;
import java.io.File;
import java.io.FileInputStream;
import java.io.IOException;
import java.io.InputStream;
import java.nio.charset.CharacterCodingException;
import java.nio.charset.CodingErrorAction;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Collections;
import java.util.Arrays;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;

/**
 * A tftl model file (tftl/runtime/modelfile.py): a TFLite flatbuffer with a ZIP appended holding
 * tftl.json, labels.txt and, once fine-tuned, state.npz. Read from bytes (assets, a picked
 * content URI or a file), checked against its content hash, and written back in the same
 * format as {@code tftl-train --output} (modelfile.py save_model).
 */
public final class ModelFile {
  public static final String METADATA = "tftl.json";
  public static final String LABELS = "labels.txt";
  public static final String STATE = "state.npz";
  /** contract/rules.json caps_bytes: the same caps as every other reader. */
  public static final long MAX_FILE_BYTES = 1L << 30;
  public static final long MAX_STATE_BYTES = 1L << 30;
  public static final long MAX_TEXT_BYTES = 16L << 20;

  public final byte[] data;
  /** The flatbuffer is data[0, flatbufferLength): what the interpreter loads. */
  public final int flatbufferLength;
  public final ModelMetadata meta;
  public final List<String> labels;
  /** The raw state.npz member of a fine-tuned file, or null. */
  public final byte[] stateNpz;
  public final String where;

  private ModelFile(byte[] data, int flatbufferLength, ModelMetadata meta, List<String> labels, byte[] stateNpz,
      String where) {
    this.data = data;
    this.flatbufferLength = flatbufferLength;
    this.meta = meta;
    this.labels = labels;
    this.stateNpz = stateNpz;
    this.where = where;
  }

  /** The flatbuffer bytes (a copy). */
  public byte[] flatbuffer() {
    return Arrays.copyOf(data, flatbufferLength);
  }

  /**
   * The identity checkpoints are tied to, as Session.model_hash: the content hash, plus, for a
   * fine-tuned file, "+" and the first 16 hex digits of sha256 of its state.npz bytes.
   */
  public String modelHash() {
    return stateNpz == null ? meta.contentHash : meta.contentHash + "+" + Files2.sha256Hex(stateNpz, stateNpz.length).substring(0, 16);
  }

  public static ModelFile read(File file) throws IOException {
    Blocking.check(Blocking.Kind.FILE, "reading model file " + file);
    if (!file.isFile()) {
      throw new TftlException("model file " + file + " does not exist — " + ModelMetadata.EXPORT_HINT);
    }
    if (file.length() > MAX_FILE_BYTES) {  // refused before a byte is read
      throw new TftlException("model file " + file + " is " + (file.length() >> 20) + " MiB, more than a model file "
          + "can be (" + (MAX_FILE_BYTES >> 20) + " MiB) — pick the right file");
    }
    try (InputStream in = new FileInputStream(file)) {
      return read(in, "model file " + file);
    }
  }

  public static ModelFile read(InputStream in, String where) throws IOException {
    return parse(Files2.readBounded(in, MAX_FILE_BYTES, where), where);
  }

  /**
   * Parses and verifies a model file, in the order of contract/rules.json "refusal_order": the
   * archive, tftl.json's hash and fields, labels.txt, the graph's signatures, then state.npz.
   *
   * @param where names the file in messages ("model file x.tflite")
   * @throws TftlException with a one-line fix and its refusal class ({@link TftlException#kind})
   */
  public static ModelFile parse(byte[] data, String where) {
    String damaged = where + " is truncated or corrupted — export it again";
    if (data.length < 8) {
      throw new TftlException(damaged);
    }
    if (!new String(data, 4, 4, StandardCharsets.ISO_8859_1).equals("TFL3")) {
      throw new TftlException(where + " is not a TFLite model (no TFL3 identifier) — " + ModelMetadata.EXPORT_HINT, "not_tflite");
    }
    Zip.Archive archive = archive(data, where);
    if (!archive.entries.containsKey(LABELS)) {
      throw new TftlException(damaged);
    }
    byte[] metaBytes = member(archive, METADATA, MAX_TEXT_BYTES, where, "damaged");
    byte[] labelBytes = member(archive, LABELS, MAX_TEXT_BYTES, where, "damaged");
    int fbLength = (int) archive.start;
    JsonObject raw;
    try {
      JsonElement json = JsonParser.parseString(utf8(metaBytes));
      raw = json.isJsonObject() ? json.getAsJsonObject() : null;
    } catch (RuntimeException | CharacterCodingException e) {
      throw new TftlException(damaged + " (unreadable tftl.json)", e);
    }
    JsonElement hash = raw == null ? null : raw.get("content_hash");
    if (hash == null || !hash.isJsonPrimitive() || !hash.getAsString().equals(Files2.sha256Hex(data, fbLength))) {
      throw new TftlException(damaged);
    }
    ModelMetadata meta = ModelMetadata.parse(raw, where);
    List<String> labels = labels(labelBytes, where);
    if (labels.size() != meta.numLabels) {
      throw new TftlException(where + " has " + labels.size() + " labels in labels.txt but tftl.json declares num_labels "
          + meta.numLabels + " — " + ModelMetadata.EXPORT_HINT, "labels");
    }
    Map<String, Tflite.Signature> sigs;
    try {
      sigs = Tflite.signatures(data, fbLength);
    } catch (IllegalArgumentException e) {
      throw new TftlException(damaged + " (" + e.getMessage() + ")", e);
    }
    checkGraph(meta, sigs, where);
    byte[] state = archive.entries.containsKey(STATE) ? member(archive, STATE, MAX_STATE_BYTES, where, "damaged") : null;
    if (state != null) {
      ModelState.check(state, sigs.get("restore"), meta.stateGroups.get("optimizer"), "state.npz of " + where);
    }
    return new ModelFile(data, fbLength, meta, Collections.unmodifiableList(new ArrayList<>(labels)), state, where);
  }

  private static Zip.Archive archive(byte[] data, String where) {
    Zip.Archive archive;
    try {
      archive = Zip.open(data);
    } catch (IOException | RuntimeException e) {
      throw new TftlException(where + " has a damaged archive (" + e.getMessage() + ") — export it again", e);
    }
    if (archive == null) {
      boolean intact = !contains(data, "PK\u0003\u0004".getBytes(StandardCharsets.ISO_8859_1));
      try {
        Tflite.signatures(data, data.length);
      } catch (IllegalArgumentException e) {
        intact = false;
      }
      if (intact) {
        throw new TftlException(where + " is not a tftl model (no tftl metadata) — " + ModelMetadata.EXPORT_HINT, "not_tftl");
      }
      throw new TftlException(where + " is truncated or corrupted (its ZIP has no end) — export it again");
    }
    if (!archive.entries.containsKey(METADATA)) {
      throw new TftlException(where + " is not a tftl model (no tftl metadata) — " + ModelMetadata.EXPORT_HINT, "not_tftl");
    }
    return archive;
  }

  private static byte[] member(Zip.Archive archive, String name, long cap, String where, String kind) {
    try {
      return archive.read(name, cap);
    } catch (IOException | RuntimeException e) {
      throw new TftlException(where + " has a damaged " + name + " (" + e.getMessage() + ") — export it again", kind, e);
    }
  }

  private static List<String> labels(byte[] bytes, String where) {
    String text;
    try {
      text = utf8(bytes);
    } catch (CharacterCodingException e) {
      throw new TftlException(where + ": labels.txt is not UTF-8 text — " + ModelMetadata.EXPORT_HINT, "labels");
    }
    try {
      return parseLabels(text);
    } catch (TftlException e) {
      throw new TftlException(where + ": " + LABELS + ": " + e.getMessage(), "labels", e);
    }
  }

  /** Strict UTF-8 (a malformed byte is an error, not U+FFFD), as Python's bytes.decode. */
  static String utf8(byte[] bytes) throws CharacterCodingException {
    return StandardCharsets.UTF_8.newDecoder().onMalformedInput(CodingErrorAction.REPORT)
        .onUnmappableCharacter(CodingErrorAction.REPORT).decode(java.nio.ByteBuffer.wrap(bytes)).toString();
  }

  private static boolean contains(byte[] data, byte[] needle) {
    outer:
    for (int i = 0; i + needle.length <= data.length; i++) {
      for (int j = 0; j < needle.length; j++) {
        if (data[i + j] != needle[j]) {
          continue outer;
        }
      }
      return true;
    }
    return false;
  }

  /** modelfile._check_graph: tftl.json against the shapes the graph's signatures declare. */
  static void checkGraph(ModelMetadata meta, Map<String, Tflite.Signature> sigs, String where) {
    int b = meta.batch;
    int r = meta.imageSize;
    int[] feats = new int[meta.featureShape.length + 1];
    feats[0] = b;
    System.arraycopy(meta.featureShape, 0, feats, 1, meta.featureShape.length);
    Map<String, int[]> want = new LinkedHashMap<>();
    want.put("images", new int[] {b, r, r, 3});
    want.put("probabilities", new int[] {b, meta.numLabels});
    want.put("features", feats);
    boolean scalarFree = !meta.raw.get("format").getAsString().equals("tftl-2");
    for (Map.Entry<String, Tflite.Signature> sig : sigs.entrySet()) {
      for (Map<String, Tflite.Tensor> side : Arrays.asList(sig.getValue().inputs, sig.getValue().outputs)) {
        for (Map.Entry<String, Tflite.Tensor> t : side.entrySet()) {
          int[] w = want.get(t.getKey());
          if (w != null && (!Arrays.equals(w, t.getValue().shape) || t.getValue().type != 0)) {
            throw new TftlException(where + ": the " + sig.getKey() + " signature's " + t.getKey() + " tensor is "
                + Arrays.toString(t.getValue().shape) + ", but tftl.json makes " + Arrays.toString(w) + " — "
                + ModelMetadata.EXPORT_HINT, "metadata");
          }
          if (scalarFree && t.getValue().shape.length == 0) {
            throw new TftlException(where + ": the " + sig.getKey() + " signature's " + t.getKey()
                + " tensor is a scalar, which tftl-3 forbids — " + ModelMetadata.EXPORT_HINT, "metadata");
          }
        }
      }
    }
    Tflite.Signature restore = sigs.get("restore");
    if (restore != null && !meta.stateNames.isEmpty() && !restore.inputs.keySet().equals(new HashSet<>(meta.stateNames))) {
      throw new TftlException(where + ": tftl.json 'state_names' differ from the restore signature's inputs — "
          + ModelMetadata.EXPORT_HINT, "metadata");
    }
  }

  /** contract.MAX_LABEL_CHARS: a label's length in Unicode code points. */
  public static final int MAX_LABEL_CHARS = 256;

  /**
   * The labels of a labels.txt text as contract.parse_labels reads them: a leading BOM dropped,
   * split at "\n" only (a stray "\r", U+2028 or \x1c inside a line is a bad label, not a line
   * break), one trailing "\r" per line dropped, blank lines dropped, then {@link #checkLabels}.
   */
  public static List<String> parseLabels(String text) {
    if (text.startsWith("\uFEFF")) {
      text = text.substring(1);
    }
    List<String> out = new ArrayList<>();
    for (String line : text.split("\n", -1)) {
      if (line.endsWith("\r")) {
        line = line.substring(0, line.length() - 1);
      }
      if (!strip(line).isEmpty()) {
        out.add(line);
      }
    }
    return checkLabels(out);
  }

  /** Python's str.isspace for one code point (Zs, the C0 separators, \x85 and the line breaks). */
  static boolean isSpace(int cp) {
    return Character.isWhitespace(cp) || Character.getType(cp) == Character.SPACE_SEPARATOR || cp == 0x85;
  }

  /** Python's str.strip(): the label without leading and trailing isSpace code points. */
  static String strip(String s) {
    int start = 0;
    int end = s.length();
    while (start < end && isSpace(s.codePointAt(start))) {
      start += Character.charCount(s.codePointAt(start));
    }
    while (end > start && isSpace(s.codePointBefore(end))) {
      end -= Character.charCount(s.codePointBefore(end));
    }
    return s.substring(start, end);
  }

  /** What breaks contract.LABEL_RULE in {@code label} (contract.label_problem), or null. */
  static String labelProblem(String label) {
    if (strip(label).isEmpty()) {
      return "is empty";
    }
    int chars = label.codePointCount(0, label.length());
    if (chars > MAX_LABEL_CHARS) {
      return "has " + chars + " characters";
    }
    if (!label.equals(strip(label))) {
      return "has outer spaces";
    }
    if (label.equals(".") || label.equals("..")) {
      return "is a path component";
    }
    for (int i = 0; i < label.length(); i += Character.charCount(label.codePointAt(i))) {
      int cp = label.codePointAt(i);
      int type = Character.getType(cp);
      if (cp == 0xFEFF || cp == '/' || cp == '\\' || cp == 0x85 || type == Character.CONTROL
          || type == Character.SURROGATE || type == Character.LINE_SEPARATOR || type == Character.PARAGRAPH_SEPARATOR) {
        return String.format("holds U+%04X", cp);
      }
    }
    return null;
  }

  /**
   * Labels as contract.check_labels wants them (LABEL_RULE: 1-256 characters of printable text on one
   * line, no control or line-separator characters, no '/' or backslash, no BOM, no outer spaces, not
   * '.' or '..'), unique; checked before any work.
   */
  public static List<String> checkLabels(List<String> labels) {
    if (labels.isEmpty()) {
      throw new TftlException("a tftl model needs at least one label — name the classes");
    }
    for (String l : labels) {
      String problem = labelProblem(l);
      if (problem != null) {
        String shown = new Gson().toJson(l).replace("\u0085", "\\u0085");  // Gson leaves NEL, a line break
        throw new TftlException("class name " + shown + " " + problem + "; a label must be 1-" + MAX_LABEL_CHARS
            + " characters of printable text on one line, with no '/', backslash or outer spaces — rename it");
      }
    }
    if (new HashSet<>(labels).size() != labels.size()) {
      throw new TftlException("class names " + labels + " contain duplicates — each name must be unique");
    }
    return Collections.unmodifiableList(new ArrayList<>(labels));
  }

  /**
   * Writes a self-contained fine-tuned model like modelfile.save_model: the same flatbuffer, new
   * labels, tftl.json with trained_state true (plus {@code updates}), and {@code state} without its
   * optimizer group as state.npz (float32, sorted names): a deployable model, as tftl-train writes it
   * (the optimizer state stays in the checkpoint). Atomic.
   */
  public void writeFineTuned(File target, List<String> newLabels, Map<String, Npy.Array> state, JsonObject updates)
      throws IOException {
    List<String> labels = checkLabels(newLabels);
    if (labels.size() != meta.numLabels) {
      throw new TftlException("the model has " + meta.numLabels + " class slots, got " + labels.size() + " names");
    }
    JsonObject m = meta.raw.deepCopy();
    if (updates != null) {
      for (Map.Entry<String, JsonElement> e : updates.entrySet()) {
        m.add(e.getKey(), e.getValue());
      }
    }
    m.addProperty("trained_state", true);
    m.addProperty("content_hash", Files2.sha256Hex(data, flatbufferLength));
    m.addProperty("num_labels", labels.size());
    Gson gson = new GsonBuilder().setPrettyPrinting().serializeNulls().disableHtmlEscaping().create();
    byte[] json = gson.toJson(sorted(m)).getBytes(StandardCharsets.UTF_8);
    Map<String, Npy.Array> sortedState = new TreeMap<>(state);
    sortedState.keySet().removeAll(meta.stateGroups.get("optimizer"));  // a deployable file: weights and BN statistics
    Map<String, byte[]> members = new LinkedHashMap<>();
    members.put(METADATA, json);
    members.put(LABELS, (Text.join("\n", labels) + "\n").getBytes(StandardCharsets.UTF_8));
    members.put(STATE, Npy.writeNpz(sortedState));
    Files2.writeAtomically(target, Arrays.copyOf(data, flatbufferLength), Zip.write(members));
  }

  /** A copy of {@code e} with every object's keys sorted (json.dumps(sort_keys=True)). */
  static JsonElement sorted(JsonElement e) {
    if (e.isJsonObject()) {
      JsonObject out = new JsonObject();
      for (Map.Entry<String, JsonElement> kv : new TreeMap<>(e.getAsJsonObject().asMap()).entrySet()) {
        out.add(kv.getKey(), sorted(kv.getValue()));
      }
      return out;
    }
    if (e.isJsonArray()) {
      com.google.gson.JsonArray out = new com.google.gson.JsonArray();
      for (JsonElement v : e.getAsJsonArray()) {
        out.add(sorted(v));
      }
      return out;
    }
    return e;
  }
}

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
 * format as {@code tftl-train --output} (session.py save_model).
 */
public final class ModelFile {
  public static final String METADATA = "tftl.json";
  public static final String LABELS = "labels.txt";
  public static final String STATE = "state.npz";
  public static final long MAX_FILE_BYTES = 1L << 30;
  private static final long MAX_MEMBER_BYTES = 1L << 30;

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
    if (!file.isFile()) {
      throw new TftlException("model file " + file + " does not exist — " + ModelMetadata.EXPORT_HINT);
    }
    try (InputStream in = new FileInputStream(file)) {
      return read(in, "model file " + file);
    }
  }

  public static ModelFile read(InputStream in, String where) throws IOException {
    return parse(Files2.readBounded(in, MAX_FILE_BYTES, where), where);
  }

  /**
   * Parses and verifies a model file.
   *
   * @param where names the file in messages ("model file x.tflite")
   * @throws TftlException with a one-line fix for a file that is not a tftl-2/tftl-3 model or is damaged
   */
  public static ModelFile parse(byte[] data, String where) {
    String damaged = where + " is truncated or corrupted — export it again";
    if (data.length < 8) {
      throw new TftlException(damaged);
    }
    if (!new String(data, 4, 4, StandardCharsets.ISO_8859_1).equals("TFL3")) {
      throw new TftlException(where + " is not a TFLite model (no TFL3 identifier) — " + ModelMetadata.EXPORT_HINT);
    }
    try {
      Zip.Archive archive = Zip.open(data);
      if (archive == null || !archive.entries.containsKey(METADATA)) {
        throw new TftlException(where + " is not a tftl model (no tftl metadata) or is truncated — "
            + ModelMetadata.EXPORT_HINT);
      }
      if (!archive.entries.containsKey(LABELS)) {
        throw new TftlException(damaged);
      }
      JsonElement json = JsonParser.parseString(new String(archive.read(METADATA, 16 << 20), StandardCharsets.UTF_8));
      String labelsText = new String(archive.read(LABELS, 16 << 20), StandardCharsets.UTF_8);
      byte[] state = archive.read(STATE, MAX_MEMBER_BYTES);
      int fbLength = (int) archive.start;
      if (!json.isJsonObject()) {
        throw new TftlException(damaged);
      }
      JsonObject raw = json.getAsJsonObject();
      JsonElement hash = raw.get("content_hash");
      if (hash == null || !hash.isJsonPrimitive() || !hash.getAsString().equals(Files2.sha256Hex(data, fbLength))) {
        throw new TftlException(damaged);
      }
      List<String> labels;
      try {
        labels = parseLabels(labelsText);
      } catch (TftlException e) {
        throw new TftlException(where + ": " + LABELS + ": " + e.getMessage(), e);
      }
      JsonElement n = raw.get("num_labels");
      if (n == null || !n.isJsonPrimitive() || n.getAsDouble() != labels.size()) {
        throw new TftlException(damaged);
      }
      ModelMetadata meta = ModelMetadata.parse(raw, where);
      return new ModelFile(data, fbLength, meta, Collections.unmodifiableList(new ArrayList<>(labels)), state, where);
    } catch (TftlException e) {
      throw e;
    } catch (IOException | RuntimeException e) {  // JSON of the wrong types, damaged members
      throw new TftlException(damaged + " (" + e.getMessage() + ")", e);
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
   * Writes a self-contained fine-tuned model like session.save_model: the same flatbuffer, new
   * labels, tftl.json with trained_state true (plus {@code updates}), and {@code state} as
   * state.npz (float32, sorted names). Atomic.
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
      new TreeMap<>(e.getAsJsonObject().asMap()).forEach((k, v) -> out.add(k, sorted(v)));
      return out;
    }
    if (e.isJsonArray()) {
      com.google.gson.JsonArray out = new com.google.gson.JsonArray();
      e.getAsJsonArray().forEach(v -> out.add(sorted(v)));
      return out;
    }
    return e;
  }
}

package org.tftl.core;

import java.io.IOException;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;

/**
 * A fine-tuned file's state.npz, checked as tftl/runtime/modelfile.py read_state checks it: a ZIP of
 * .npy members whose names are the restore signature's inputs (all, or all but the optimizer group), each little-endian float32 in
 * C order with the shape the graph declares ((1,) also accepts ()), and every value finite. Names and
 * headers are compared before any array is read. Every refusal has the class "state".
 */
public final class ModelState {
  private ModelState() {}

  /**
   * Refuses {@code npz} unless it fits {@code restore} (null: no restore signature; names unchecked):
   * every input, or every input but the {@code optimizer} group (a deployable file).
   */
  public static void check(byte[] npz, Tflite.Signature restore, List<String> optimizer, String where) {
    Zip.Archive archive;
    try {
      archive = Zip.open(npz);
    } catch (IOException | RuntimeException e) {
      throw refused(where + " is damaged (" + e.getMessage() + ") — train it again", e);
    }
    if (archive == null) {
      throw refused(where + " is damaged (not a ZIP archive) — train it again", null);
    }
    List<String> names = new ArrayList<>();
    long total = 0;
    for (Zip.Entry e : archive.entries.values()) {
      if (!e.name.endsWith(".npy") || e.name.equals(".npy")) {
        throw refused(where + ": member '" + e.name + "' is not a .npy array — train it again", null);
      }
      names.add(e.name.substring(0, e.name.length() - 4));
      total += e.size;
    }
    if (total > ModelFile.MAX_STATE_BYTES) {
      throw refused(where + ": arrays declare " + total + " bytes (at most " + ModelFile.MAX_STATE_BYTES + ")", null);
    }
    Set<String> deployable = new HashSet<>(restore == null ? Collections.<String>emptySet() : restore.inputs.keySet());
    deployable.removeAll(optimizer);
    if (restore != null && !new HashSet<>(names).equals(restore.inputs.keySet())
        && !(new HashSet<>(names).equals(deployable) && !optimizer.isEmpty())) {
      throw refused(where + " does not fit the model (other tensor names) — it belongs to another model", null);
    }
    Map<String, Npy.Array> arrays = new LinkedHashMap<>();
    for (String name : names) {
      try {
        arrays.put(name, Npy.read(archive.read(name + ".npy", ModelFile.MAX_STATE_BYTES)));
      } catch (IOException | RuntimeException e) {
        throw refused(where + ": " + name + " is damaged (" + e.getMessage() + ") — train it again", e);
      }
    }
    checkArrays(arrays, restore, true, where);
  }

  /**
   * Refuses arrays whose shapes differ from {@code restore}'s inputs ((1,) also accepts ()), that are
   * not float32 ({@code float32Only}: a state.npz) or not numeric, or that hold NaN or infinity.
   */
  public static void checkArrays(Map<String, Npy.Array> arrays, Tflite.Signature restore, boolean float32Only,
      String where) {
    for (Map.Entry<String, Npy.Array> entry : arrays.entrySet()) {
      String name = entry.getKey();
      Npy.Array a = entry.getValue();
      if (float32Only && !a.descr.equals("<f4")) {
        throw refused(where + ": " + name + " holds " + a.descr + ", but state.npz holds little-endian float32 (<f4) only", null);
      }
      int[] want = restore == null ? a.shape : restore.inputs.get(name).shape;
      if (!Arrays.equals(a.shape, want) && !(a.shape.length == 0 && Arrays.equals(want, new int[] {1}))) {
        throw refused(where + ": " + name + " has shape " + Arrays.toString(a.shape) + ", the model has "
            + Arrays.toString(want) + " — it belongs to another model", null);
      }
      for (float v : a.floats()) {
        if (!Float.isFinite(v)) {
          throw refused(where + " holds NaN or infinite values in " + name + " — train it again", null);
        }
      }
    }
  }

  private static TftlException refused(String message, Throwable cause) {
    return new TftlException(message, "state", cause);
  }
}

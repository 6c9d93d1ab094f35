package org.tftl.core;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.CharacterCodingException;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * The signature tensors of a TFLite flatbuffer, read straight from its bytes (Model.signature_defs ->
 * SignatureDef.inputs/outputs -> TensorMap.tensor_index -> SubGraph.tensors[i].shape/type), as
 * tftl/runtime/modelfile.py signature_tensors does, so the reader checks tftl.json and a state against
 * the graph before LiteRT loads anything. Every offset is bounds-checked.
 */
public final class Tflite {
  /** One signature tensor: its shape and TensorType code (0 = float32). */
  public static final class Tensor {
    public final int[] shape;
    public final int type;

    Tensor(int[] shape, int type) {
      this.shape = shape;
      this.type = type;
    }
  }

  /** A signature's inputs and outputs by name. */
  public static final class Signature {
    public final Map<String, Tensor> inputs = new LinkedHashMap<>();
    public final Map<String, Tensor> outputs = new LinkedHashMap<>();
  }

  private final ByteBuffer b;
  private final int length;

  private Tflite(byte[] data, int length) {
    this.b = ByteBuffer.wrap(data, 0, length).order(ByteOrder.LITTLE_ENDIAN);
    this.length = length;
  }

  /**
   * The signatures of the flatbuffer data[0, length).
   *
   * @throws IllegalArgumentException an offset, index or string outside the buffer (a damaged flatbuffer)
   */
  public static Map<String, Signature> signatures(byte[] data, int length) {
    try {
      return new Tflite(data, length).read();
    } catch (IndexOutOfBoundsException | CharacterCodingException e) {
      throw new IllegalArgumentException("damaged flatbuffer (" + e + ")");
    }
  }

  private Map<String, Signature> read() throws CharacterCodingException {
    int root = u32(0);
    int[] rf = fields(root);
    List<Integer> subgraphs = elements(root, rf, 2, 4);
    Map<String, Signature> out = new LinkedHashMap<>();
    for (int pos : elements(root, rf, 7, 4)) {
      int sig = child(pos);
      int[] sf = fields(sig);
      long index = scalarU32(sig, sf, 4);
      if (index >= subgraphs.size()) {
        throw new IllegalArgumentException("signature subgraph index out of range");
      }
      int graph = child(subgraphs.get((int) index));
      List<Integer> tensors = elements(graph, fields(graph), 0, 4);
      Signature s = new Signature();
      for (int side = 0; side < 2; side++) {
        for (int mpos : elements(sig, sf, side, 4)) {
          int tmap = child(mpos);
          int[] mf = fields(tmap);
          long t = scalarU32(tmap, mf, 1);
          if (t >= tensors.size()) {
            throw new IllegalArgumentException("signature tensor index out of range");
          }
          int tensor = child(tensors.get((int) t));
          int[] tf = fields(tensor);
          List<Integer> dims = elements(tensor, tf, 0, 4);
          int[] shape = new int[dims.size()];
          for (int k = 0; k < shape.length; k++) {
            shape[k] = b.getInt(dims.get(k));
          }
          int type = tf.length > 1 && tf[1] != 0 ? b.get(tensor + tf[1]) : 0;
          (side == 0 ? s.inputs : s.outputs).put(string(tmap, mf, 0), new Tensor(shape, type));
        }
      }
      out.put(string(sig, sf, 2), s);
    }
    return out;
  }

  private int u32(int pos) {
    long v = b.getInt(pos) & 0xffffffffL;
    if (v > length) {
      throw new IndexOutOfBoundsException("offset out of bounds");
    }
    return (int) v;
  }

  private int[] fields(int table) {
    if (table < 0 || table > length - 4) {
      throw new IndexOutOfBoundsException("table out of bounds");
    }
    long vtable = (long) table - b.getInt(table);
    if (vtable < 0 || vtable > length - 4) {
      throw new IndexOutOfBoundsException("vtable out of bounds");
    }
    int vlen = b.getShort((int) vtable) & 0xffff;
    int tlen = b.getShort((int) vtable + 2) & 0xffff;
    if (vlen < 4 || vtable + vlen > length || (long) table + tlen > length) {
      throw new IndexOutOfBoundsException("table out of bounds");
    }
    int[] out = new int[(vlen - 4) / 2];
    for (int k = 0; k < out.length; k++) {
      out[k] = b.getShort((int) vtable + 4 + 2 * k) & 0xffff;
    }
    return out;
  }

  private List<Integer> elements(int table, int[] f, int index, int size) {
    List<Integer> out = new ArrayList<>();
    if (index >= f.length || f[index] == 0) {
      return out;
    }
    int pos = table + f[index];
    long start = (long) pos + u32(pos);
    long n = u32((int) start);
    if (start + 4 + n * size > length) {
      throw new IndexOutOfBoundsException("vector out of bounds");
    }
    for (int k = 0; k < n; k++) {
      out.add((int) (start + 4 + (long) k * size));
    }
    return out;
  }

  private int child(int pos) {
    long table = (long) pos + u32(pos);
    if (table > length) {
      throw new IndexOutOfBoundsException("table out of bounds");
    }
    return (int) table;
  }

  private long scalarU32(int table, int[] f, int index) {
    return index >= f.length || f[index] == 0 ? 0 : b.getInt(table + f[index]) & 0xffffffffL;
  }

  private String string(int table, int[] f, int index) throws CharacterCodingException {
    List<Integer> bytes = elements(table, f, index, 1);
    if (bytes.isEmpty()) {
      return "";
    }
    ByteBuffer slice = b.duplicate();
    slice.position(bytes.get(0)).limit(bytes.get(0) + bytes.size());
    return StandardCharsets.UTF_8.newDecoder().decode(slice).toString();
  }
}

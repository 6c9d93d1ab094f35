package org.tftl.core;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * numpy's .npy format (version 1.0 to 3.0 headers) and .npz (a ZIP of NAME.npy members), for the
 * dtypes tftl checkpoints hold: little-endian float32, float64, int32, int64 and uint8. Never
 * reads object arrays (no pickle); C order only. The header's shape bounds what is allocated.
 */
public final class Npy {
  private static final byte[] MAGIC = {(byte) 0x93, 'N', 'U', 'M', 'P', 'Y'};
  private static final Pattern DESCR = Pattern.compile("'descr'\\s*:\\s*'([^']*)'");
  private static final Pattern FORTRAN = Pattern.compile("'fortran_order'\\s*:\\s*(True|False)");
  private static final Pattern SHAPE = Pattern.compile("'shape'\\s*:\\s*\\(([^)]*)\\)");

  private Npy() {}

  /** An array: dtype descr ("&lt;f4", "|u1", ...), shape and little-endian raw data. */
  public static final class Array {
    public final String descr;
    public final int[] shape;
    public final byte[] raw;

    public Array(String descr, int[] shape, byte[] raw) {
      this.descr = descr;
      this.shape = shape;
      this.raw = raw;
    }

    /** A float32 array of the given shape. */
    public static Array ofFloats(float[] values, int[] shape) {
      ByteBuffer b = ByteBuffer.allocate(values.length * 4).order(ByteOrder.LITTLE_ENDIAN);
      b.asFloatBuffer().put(values);
      return new Array("<f4", shape.clone(), b.array());
    }

    /** A 1-D uint8 array. */
    public static Array ofBytes(byte[] values) {
      return new Array("|u1", new int[] {values.length}, values.clone());
    }

    public long elements() {
      long n = 1;
      for (int d : shape) {
        n *= d;
      }
      return n;
    }

    /** The values as float32 (float64 and integers are converted, as numpy's astype would). */
    public float[] floats() {
      int n = (int) elements();
      float[] out = new float[n];
      ByteBuffer b = ByteBuffer.wrap(raw).order(ByteOrder.LITTLE_ENDIAN);
      switch (descr) {
        case "<f4":
          b.asFloatBuffer().get(out);
          break;
        case "<f8":
          for (int i = 0; i < n; i++) {
            out[i] = (float) b.getDouble(8 * i);
          }
          break;
        case "<i4":
          for (int i = 0; i < n; i++) {
            out[i] = b.getInt(4 * i);
          }
          break;
        case "<i8":
          for (int i = 0; i < n; i++) {
            out[i] = b.getLong(8 * i);
          }
          break;
        case "|u1":
          for (int i = 0; i < n; i++) {
            out[i] = raw[i] & 0xff;
          }
          break;
        case "<f2":
          for (int i = 0; i < n; i++) {
            out[i] = Half.toFloat(b.getShort(2 * i));
          }
          break;
        default:
          throw new IllegalArgumentException("dtype " + descr + " is not numeric");
      }
      return out;
    }
  }

  static int itemSize(String descr) {
    switch (descr) {
      case "<f4":
      case "<i4":
        return 4;
      case "<f8":
      case "<i8":
        return 8;
      case "<f2":
        return 2;
      case "|u1":
      case "<u1":
        return 1;
      default:
        return -1;
    }
  }

  /**
   * Parses one .npy.
   *
   * @throws IOException for a damaged or unsupported array (the message names what is wrong)
   */
  public static Array read(byte[] data) throws IOException {
    if (data.length < 10) {
      throw new IOException("not a .npy array (too short)");
    }
    for (int i = 0; i < MAGIC.length; i++) {
      if (data[i] != MAGIC[i]) {
        throw new IOException("not a .npy array (no magic)");
      }
    }
    ByteBuffer b = ByteBuffer.wrap(data).order(ByteOrder.LITTLE_ENDIAN);
    int major = data[6];
    long headerLen;
    int start;
    if (major == 1) {
      headerLen = b.getShort(8) & 0xffff;
      start = 10;
    } else if (major == 2 || major == 3) {
      headerLen = b.getInt(8) & 0xffffffffL;
      start = 12;
    } else {
      throw new IOException(".npy version " + major + " is not supported");
    }
    if (start + headerLen > data.length) {
      throw new IOException(".npy header runs past the end");
    }
    String header = new String(data, start, (int) headerLen,
        major == 3 ? StandardCharsets.UTF_8 : StandardCharsets.ISO_8859_1);
    Matcher d = DESCR.matcher(header);
    Matcher f = FORTRAN.matcher(header);
    Matcher s = SHAPE.matcher(header);
    if (!d.find() || !f.find() || !s.find()) {
      throw new IOException("bad .npy header " + header.trim());
    }
    String descr = d.group(1).equals("<u1") ? "|u1" : d.group(1);
    int item = itemSize(descr);
    if (item < 0) {
      throw new IOException("dtype " + descr + " is not one tftl stores (float16, float32, float64, int32, int64, uint8)");
    }
    if (f.group(1).equals("True")) {
      throw new IOException("Fortran-order arrays are not supported");
    }
    List<Integer> dims = new ArrayList<>();
    for (String part : s.group(1).split(",")) {
      if (!part.trim().isEmpty()) {
        try {
          dims.add(Integer.parseInt(part.trim()));
        } catch (NumberFormatException e) {
          throw new IOException("bad .npy shape " + s.group(1));
        }
      }
    }
    int[] shape = new int[dims.size()];
    for (int i = 0; i < shape.length; i++) {
      shape[i] = dims.get(i);
    }
    long n = item;
    for (int dim : shape) {
      n *= dim;
      if (dim < 0 || n > data.length) {  // also keeps the product from overflowing
        throw new IOException("array of shape " + dims + " is larger than its member");
      }
    }
    long body = start + headerLen;
    if (n < 0 || body + n != data.length) {
      throw new IOException("array of shape " + dims + " needs " + n + " bytes, the member has " + (data.length - body));
    }
    byte[] raw = new byte[(int) n];
    System.arraycopy(data, (int) body, raw, 0, raw.length);
    return new Array(descr, shape, raw);
  }

  /** One .npy (version 1.0, header padded to 64 bytes as numpy writes it). */
  public static byte[] write(Array a) {
    StringBuilder shape = new StringBuilder("(");
    for (int i = 0; i < a.shape.length; i++) {
      shape.append(a.shape[i]).append(a.shape.length == 1 ? "," : (i + 1 < a.shape.length ? ", " : ""));
    }
    shape.append(")");
    StringBuilder header = new StringBuilder("{'descr': '" + a.descr + "', 'fortran_order': False, 'shape': "
        + shape + ", }");
    while ((10 + header.length() + 1) % 64 != 0) {
      header.append(' ');
    }
    header.append('\n');
    ByteArrayOutputStream out = new ByteArrayOutputStream();
    out.write(MAGIC, 0, MAGIC.length);
    out.write(1);
    out.write(0);
    out.write(header.length() & 0xff);
    out.write(header.length() >> 8);
    byte[] h = header.toString().getBytes(StandardCharsets.ISO_8859_1);
    out.write(h, 0, h.length);
    out.write(a.raw, 0, a.raw.length);
    return out.toByteArray();
  }

  /** Reads a .npz; member names lose their ".npy" as numpy's load does. Null when not a ZIP. */
  public static Map<String, Array> readNpz(byte[] data, long memberLimit) throws IOException {
    Zip.Archive archive = Zip.open(data);
    if (archive == null) {
      return null;
    }
    Map<String, Array> out = new LinkedHashMap<>();
    for (String name : archive.entries.keySet()) {
      String key = name.endsWith(".npy") ? name.substring(0, name.length() - 4) : name;
      out.put(key, read(archive.read(name, memberLimit)));
    }
    return out;
  }

  /** A .npz of {@code arrays} in the map's order, STORED with fixed timestamps. */
  public static byte[] writeNpz(Map<String, Array> arrays) {
    Map<String, byte[]> members = new LinkedHashMap<>();
    for (Map.Entry<String, Array> e : arrays.entrySet()) {
      members.put(e.getKey() + ".npy", write(e.getValue()));
    }
    return Zip.write(members);
  }
}

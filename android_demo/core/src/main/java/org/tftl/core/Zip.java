package org.tftl.core;

import java.io.ByteArrayOutputStream;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.zip.CRC32;
import java.util.zip.DataFormatException;
import java.util.zip.Inflater;

/**
 * The small ZIP subset tftl files use, on byte arrays (an app reads its model from assets or a
 * content URI, not a file path): reading an archive that may sit after other bytes (the
 * flatbuffer), as Python's zipfile does, and writing STORED members with fixed timestamps so
 * the same content gives the same bytes. Handles Zip64 size fields (numpy's savez writes them)
 * and DEFLATED members; anything else is refused as damaged. java.util.zip.ZipFile needs a
 * file and ZipEntry.setTimeLocal needs API 26, hence this.
 */
public final class Zip {
  private static final int LOCAL = 0x04034b50;
  private static final int CENTRAL = 0x02014b50;
  private static final int END = 0x06054b50;
  /** contract/rules.json "zip": the same archive rules as tftl/runtime/safezip.py. */
  public static final int MAX_MEMBERS = 100_016;
  public static final long MAX_RATIO = 100;
  public static final long RATIO_FREE = 1 << 20;
  private static final int DOS_DATE_1980 = (0 << 9) | (1 << 5) | 1;  // 1980-01-01 00:00:00

  private Zip() {}

  /** A member: where its data lies in the whole byte array, and how it is stored. */
  public static final class Entry {
    public final String name;
    final long localHeader;
    final long compressedSize;
    final long size;
    final int method;
    final long crc;

    Entry(String name, long localHeader, long compressedSize, long size, int method, long crc) {
      this.name = name;
      this.localHeader = localHeader;
      this.compressedSize = compressedSize;
      this.size = size;
      this.method = method;
      this.crc = crc;
    }
  }

  /** A parsed archive: members by name, and the offset of its first local header (where it starts). */
  public static final class Archive {
    public final Map<String, Entry> entries;
    public final long start;
    private final byte[] data;

    Archive(byte[] data, Map<String, Entry> entries, long start) {
      this.data = data;
      this.entries = entries;
      this.start = start;
    }

    /** The uncompressed bytes of member {@code name}, at most {@code limit} bytes; null if absent. */
    public byte[] read(String name, long limit) throws java.io.IOException {
      Entry e = entries.get(name);
      if (e == null) {
        return null;
      }
      if (e.size > limit || e.size > Integer.MAX_VALUE - 16) {
        throw new java.io.IOException("member " + name + " is " + e.size + " bytes, over the " + limit + " allowed");
      }
      if (e.size > RATIO_FREE && e.size > MAX_RATIO * Math.max(e.compressedSize, 1)) {
        throw new java.io.IOException("member " + name + " inflates " + e.size / Math.max(e.compressedSize, 1)
            + "x (at most " + MAX_RATIO + "x)");
      }
      return checked(e, inflate(e, name));
    }

    private byte[] checked(Entry e, byte[] out) throws java.io.IOException {
      CRC32 crc = new CRC32();
      crc.update(out, 0, out.length);
      if (crc.getValue() != e.crc) {
        throw new java.io.IOException("member " + e.name + " is damaged (bad CRC-32)");
      }
      return out;
    }

    private byte[] inflate(Entry e, String name) throws java.io.IOException {
      ByteBuffer b = le(data);
      long h = e.localHeader;
      if (h < 0 || h + 30 > data.length || b.getInt((int) h) != LOCAL) {
        throw new java.io.IOException("bad local header for " + name);
      }
      long dataStart = h + 30 + (b.getShort((int) h + 26) & 0xffff) + (b.getShort((int) h + 28) & 0xffff);
      if (dataStart + e.compressedSize > data.length) {
        throw new java.io.IOException("member " + name + " runs past the end of the file");
      }
      if (e.method == 0) {
        if (e.size != e.compressedSize) {
          throw new java.io.IOException("stored member " + name + " has inconsistent sizes");
        }
        byte[] out = new byte[(int) e.size];
        System.arraycopy(data, (int) dataStart, out, 0, out.length);
        return out;
      }
      if (e.method != 8) {
        throw new java.io.IOException("member " + name + " uses compression method " + e.method);
      }
      Inflater inflater = new Inflater(true);
      try {
        inflater.setInput(data, (int) dataStart, (int) e.compressedSize);
        byte[] out = new byte[(int) e.size];
        int n = 0;
        while (n < out.length && !inflater.finished()) {
          int got = inflater.inflate(out, n, out.length - n);
          if (got == 0 && (inflater.needsInput() || inflater.needsDictionary())) {
            break;
          }
          n += got;
        }
        if (n != out.length) {
          throw new java.io.IOException("member " + name + " is truncated");
        }
        return out;
      } catch (DataFormatException ex) {
        throw new java.io.IOException("member " + name + " is corrupted (" + ex.getMessage() + ")");
      } finally {
        inflater.end();
      }
    }
  }

  private static ByteBuffer le(byte[] data) {
    return ByteBuffer.wrap(data).order(ByteOrder.LITTLE_ENDIAN);
  }

  /**
   * Parses the archive at the end of {@code data}; null when there is no end record (not a ZIP).
   *
   * @throws java.io.IOException for a damaged central directory
   */
  public static Archive open(byte[] data) throws java.io.IOException {
    ByteBuffer b = le(data);
    int end = -1;
    for (int i = data.length - 22; i >= Math.max(0, data.length - 22 - 65535); i--) {
      if (b.getInt(i) == END) {
        end = i;
        break;
      }
    }
    if (end < 0) {
      return null;
    }
    int count = b.getShort(end + 10) & 0xffff;
    if (count > MAX_MEMBERS) {
      throw new java.io.IOException(count + " archive members (at most " + MAX_MEMBERS + ")");
    }
    long cdSize = b.getInt(end + 12) & 0xffffffffL;
    long cdOffset = b.getInt(end + 16) & 0xffffffffL;
    // Bytes before the archive (the flatbuffer) shift every offset it records, as zipfile allows.
    long shift = end - cdSize - cdOffset;
    if (shift < 0 || cdSize > end) {
      throw new java.io.IOException("bad central directory");
    }
    Map<String, Entry> entries = new LinkedHashMap<>();
    long start = Long.MAX_VALUE;
    int p = (int) (end - cdSize);
    for (int k = 0; k < count; k++) {
      if (p + 46 > end || b.getInt(p) != CENTRAL) {
        throw new java.io.IOException("bad central directory entry " + k);
      }
      int flags = b.getShort(p + 8) & 0xffff;
      int method = b.getShort(p + 10) & 0xffff;
      long crc = b.getInt(p + 16) & 0xffffffffL;
      long csize = b.getInt(p + 20) & 0xffffffffL;
      long size = b.getInt(p + 24) & 0xffffffffL;
      int nameLen = b.getShort(p + 28) & 0xffff;
      int extraLen = b.getShort(p + 30) & 0xffff;
      int commentLen = b.getShort(p + 32) & 0xffff;
      long local = b.getInt(p + 42) & 0xffffffffL;
      if (p + 46 + nameLen + extraLen > end) {
        throw new java.io.IOException("bad central directory entry " + k);
      }
      String name = new String(data, p + 46, nameLen, StandardCharsets.UTF_8);
      int x = p + 46 + nameLen;
      int xEnd = x + extraLen;
      while (x + 4 <= xEnd) {  // Zip64 extra field: the 0xffffffff fields, in order
        int id = b.getShort(x) & 0xffff;
        int len = b.getShort(x + 2) & 0xffff;
        int q = x + 4;
        if (id == 1) {
          if (size == 0xffffffffL && q + 8 <= xEnd) {
            size = b.getLong(q);
            q += 8;
          }
          if (csize == 0xffffffffL && q + 8 <= xEnd) {
            csize = b.getLong(q);
            q += 8;
          }
          if (local == 0xffffffffL && q + 8 <= xEnd) {
            local = b.getLong(q);
          }
        }
        x += 4 + len;
      }
      if (entries.containsKey(name)) {
        throw new java.io.IOException("duplicate archive member names");
      }
      if ((flags & 1) != 0 || (method != 0 && method != 8)) {
        throw new java.io.IOException("member " + name + ((flags & 1) != 0 ? " is encrypted"
            : " uses compression method " + method + " (only stored or deflated)"));
      }
      entries.put(name, new Entry(name, local + shift, csize, size, method, crc));
      start = Math.min(start, local + shift);
      p += 46 + nameLen + extraLen + commentLen;
    }
    return new Archive(data, entries, count == 0 ? end : start);
  }

  /** A STORED archive of {@code members} in the given order, with fixed timestamps. */
  public static byte[] write(Map<String, byte[]> members) {
    ByteArrayOutputStream out = new ByteArrayOutputStream();
    ByteArrayOutputStream central = new ByteArrayOutputStream();
    for (Map.Entry<String, byte[]> m : members.entrySet()) {
      byte[] name = m.getKey().getBytes(StandardCharsets.UTF_8);
      byte[] body = m.getValue();
      CRC32 crc = new CRC32();
      crc.update(body);
      int offset = out.size();
      ByteBuffer h = ByteBuffer.allocate(30).order(ByteOrder.LITTLE_ENDIAN);
      h.putInt(LOCAL).putShort((short) 20).putShort((short) 0).putShort((short) 0)
          .putShort((short) 0).putShort((short) DOS_DATE_1980).putInt((int) crc.getValue())
          .putInt(body.length).putInt(body.length).putShort((short) name.length).putShort((short) 0);
      out.write(h.array(), 0, 30);
      out.write(name, 0, name.length);
      out.write(body, 0, body.length);
      ByteBuffer c = ByteBuffer.allocate(46).order(ByteOrder.LITTLE_ENDIAN);
      c.putInt(CENTRAL).putShort((short) 20).putShort((short) 20).putShort((short) 0).putShort((short) 0)
          .putShort((short) 0).putShort((short) DOS_DATE_1980).putInt((int) crc.getValue())
          .putInt(body.length).putInt(body.length).putShort((short) name.length).putShort((short) 0)
          .putShort((short) 0).putShort((short) 0).putShort((short) 0).putInt(0).putInt(offset);
      central.write(c.array(), 0, 46);
      central.write(name, 0, name.length);
    }
    int cdOffset = out.size();
    byte[] cd = central.toByteArray();
    out.write(cd, 0, cd.length);
    ByteBuffer e = ByteBuffer.allocate(22).order(ByteOrder.LITTLE_ENDIAN);
    e.putInt(END).putShort((short) 0).putShort((short) 0).putShort((short) members.size())
        .putShort((short) members.size()).putInt(cd.length).putInt(cdOffset).putShort((short) 0);
    out.write(e.array(), 0, 22);
    return out.toByteArray();
  }
}

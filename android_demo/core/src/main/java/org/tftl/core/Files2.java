package org.tftl.core;

import java.io.File;
import java.io.FileOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.io.ByteArrayOutputStream;
import java.io.FileInputStream;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;

/** File helpers the core shares: bounded reads, atomic writes (temp file, fsync, rename) and sha256. */
public final class Files2 {
  private Files2() {}

  /**
   * Writes {@code parts} to {@code target} so that it holds either the old or the whole new content,
   * even if the process or the device dies mid-write: temp file in the same folder, fsync, rename.
   */
  public static void writeAtomically(File target, byte[]... parts) throws IOException {
    Blocking.check(Blocking.Kind.FILE, "writing " + target);
    File dir = target.getAbsoluteFile().getParentFile();
    if (dir == null || !dir.isDirectory()) {
      throw new IOException("folder of " + target + " does not exist");
    }
    File tmp = File.createTempFile("." + target.getName() + ".", ".tmp", dir);
    boolean ok = false;
    try {
      try (FileOutputStream out = new FileOutputStream(tmp)) {
        for (byte[] p : parts) {
          out.write(p);
        }
        out.flush();
        out.getFD().sync();
      }
      // rename(2): atomic within a folder, and replaces the target (java.nio.file needs API 26).
      if (!tmp.renameTo(target)) {
        throw new IOException("cannot rename " + tmp + " to " + target);
      }
      ok = true;
    } finally {
      if (!ok) {
        tmp.delete();
      }
    }
  }

  /** All of {@code in}, refusing more than {@code limit} bytes (a file cannot make us allocate without bound). */
  public static byte[] readBounded(InputStream in, long limit, String what) throws IOException {
    Blocking.check(Blocking.Kind.FILE, "reading " + what);
    ByteArrayOutputStream out = new ByteArrayOutputStream();
    pump(in, out, limit, what);
    return out.toByteArray();
  }

  /** Copies {@code in} to {@code out} through one 64 KiB buffer, refusing more than {@code limit} bytes. */
  private static void pump(InputStream in, OutputStream out, long limit, String what) throws IOException {
    byte[] buf = new byte[1 << 16];
    long total = 0;
    int n;
    while ((n = in.read(buf)) > 0) {
      total += n;
      if (total > limit) {
        throw new TftlException(what + " is larger than " + (limit >> 20) + " MiB — pick the right file");
      }
      out.write(buf, 0, n);
    }
  }

  /**
   * Streams {@code in} into {@code target} through one small buffer, refusing more than {@code limit}
   * bytes (a picked file is never held in memory whole); on any failure {@code target} is deleted.
   */
  public static void copyBounded(InputStream in, File target, long limit, String what) throws IOException {
    Blocking.check(Blocking.Kind.FILE, "copying " + what + " to " + target);
    try (OutputStream out = new FileOutputStream(target)) {
      pump(in, out, limit, what);
    } catch (IOException | RuntimeException e) {
      target.delete();
      throw e;
    }
  }

  /** The whole file, refusing more than {@code limit} bytes. */
  public static byte[] readFile(File file, long limit) throws IOException {
    Blocking.check(Blocking.Kind.FILE, "reading " + file);
    if (file.length() > limit) {  // refused before a byte is read
      throw new TftlException(file + " is larger than " + (limit >> 20) + " MiB — pick the right file");
    }
    try (InputStream in = new FileInputStream(file)) {
      return readBounded(in, limit, file.toString());
    }
  }

  /** sha256 hex of bytes [0, length) of {@code data}. */
  public static String sha256Hex(byte[] data, int length) {
    try {
      MessageDigest md = MessageDigest.getInstance("SHA-256");
      md.update(data, 0, length);
      StringBuilder sb = new StringBuilder();
      for (byte b : md.digest()) {
        sb.append(String.format("%02x", b & 0xff));
      }
      return sb.toString();
    } catch (NoSuchAlgorithmException e) {
      throw new IllegalStateException(e);
    }
  }
}

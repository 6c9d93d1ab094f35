package org.tftl.core;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.Map;

/**
 * Trunk features of every collected photo, extracted once (the {@code extract} signature) and kept
 * instead of the photo, exactly as tftl-train's FeatureCache: float16 times a float32 scale per
 * row (the row's max |x|, 1 when zero or not finite), so float16 keeps ~3 significant digits
 * whatever the features' magnitude. Rows grow as photos are added; persisted as an .npz.
 */
public final class FeatureCache {
  public final int rowElements;
  private short[] features = new short[0];
  private float[] scales = new float[0];
  private int[] labels = new int[0];
  private int rows;

  public FeatureCache(int rowElements) {
    this.rowElements = rowElements;
  }

  public int size() {
    return rows;
  }

  public int label(int row) {
    return labels[row];
  }

  /** Adds {@code count} rows of float32 features with their class indices; returns the first row's index. */
  public int add(float[] rowsData, int[] rowLabels) {
    int count = rowLabels.length;
    if (rowsData.length != count * rowElements) {
      throw new IllegalArgumentException("features hold " + rowsData.length + " values, not " + count + " x " + rowElements);
    }
    int first = rows;
    ensure(rows + count);
    for (int r = 0; r < count; r++) {
      float max = 0f;
      for (int i = 0; i < rowElements; i++) {
        max = Math.max(max, Math.abs(rowsData[r * rowElements + i]));
      }
      float scale = Float.isFinite(max) && max > 0 ? max : 1f;
      int at = (first + r) * rowElements;
      for (int i = 0; i < rowElements; i++) {
        features[at + i] = Half.fromFloat(rowsData[r * rowElements + i] / scale);
      }
      scales[first + r] = scale;
      labels[first + r] = rowLabels[r];
    }
    rows += count;
    return first;
  }

  private void ensure(int capacity) {
    if (capacity > labels.length) {
      int n = Math.max(capacity, labels.length * 2 + 8);
      features = Arrays.copyOf(features, n * rowElements);
      scales = Arrays.copyOf(scales, n);
      labels = Arrays.copyOf(labels, n);
    }
  }

  /** float32 features of {@code index} rows, concatenated (float16 value times the row's scale). */
  public float[] get(int[] index) {
    float[] out = new float[index.length * rowElements];
    for (int r = 0; r < index.length; r++) {
      int at = index[r] * rowElements;
      float scale = scales[index[r]];
      for (int i = 0; i < rowElements; i++) {
        out[r * rowElements + i] = Half.toFloat(features[at + i]) * scale;
      }
    }
    return out;
  }

  /** A new cache of rows {@code index} (their float16 values and scales as they are, not quantised again). */
  public FeatureCache select(int[] index) {
    FeatureCache c = new FeatureCache(rowElements);
    c.ensure(index.length);
    for (int r = 0; r < index.length; r++) {
      System.arraycopy(features, index[r] * rowElements, c.features, r * rowElements, rowElements);
      c.scales[r] = scales[index[r]];
      c.labels[r] = labels[index[r]];
    }
    c.rows = index.length;
    return c;
  }

  /** Classes need this many photos each before any is held out (web_demo's HOLDOUT_FROM). */
  public static final int HOLDOUT_FROM = 5;
  /** Every this many-th photo of a class is held out (web_demo's HOLDOUT_EVERY). */
  public static final int HOLDOUT_EVERY = 5;

  /**
   * The automatic validation split, web_demo's rule: once every class with photos has
   * HOLDOUT_FROM, every HOLDOUT_EVERY-th photo of each class (in the order added) is held out.
   * Returns {train rows, held-out rows}.
   */
  public int[][] split() {
    Map<Integer, Integer> count = new java.util.HashMap<>();
    for (int r = 0; r < rows; r++) {
      Integer c = count.get(labels[r]);
      count.put(labels[r], c == null ? 1 : c + 1);
    }
    boolean holdOut = !count.isEmpty() && java.util.Collections.min(count.values()) >= HOLDOUT_FROM;
    int[] seen = new int[rows == 0 ? 0 : maxLabel() + 1];
    int[] train = new int[rows];
    int[] val = new int[rows];
    int t = 0;
    int v = 0;
    for (int r = 0; r < rows; r++) {
      if (holdOut && seen[labels[r]]++ % HOLDOUT_EVERY == HOLDOUT_EVERY - 1) {
        val[v++] = r;
      } else {
        train[t++] = r;
      }
    }
    return new int[][] {Arrays.copyOf(train, t), Arrays.copyOf(val, v)};
  }

  private int maxLabel() {
    int m = 0;
    for (int r = 0; r < rows; r++) {
      m = Math.max(m, labels[r]);
    }
    return m;
  }

  /** Removes the rows whose label is {@code label} (a class the user deleted). */
  public void removeLabel(int label) {
    int w = 0;
    for (int r = 0; r < rows; r++) {
      if (labels[r] != label) {
        System.arraycopy(features, r * rowElements, features, w * rowElements, rowElements);
        scales[w] = scales[r];
        labels[w] = labels[r];
        w++;
      }
    }
    rows = w;
  }

  /** The cache as .npz bytes: features float16 [n, row], scales float32 [n], labels int32 [n]. */
  public byte[] toNpz() {
    ByteBuffer f = ByteBuffer.allocate(rows * rowElements * 2).order(ByteOrder.LITTLE_ENDIAN);
    f.asShortBuffer().put(features, 0, rows * rowElements);
    ByteBuffer s = ByteBuffer.allocate(rows * 4).order(ByteOrder.LITTLE_ENDIAN);
    s.asFloatBuffer().put(scales, 0, rows);
    ByteBuffer l = ByteBuffer.allocate(rows * 4).order(ByteOrder.LITTLE_ENDIAN);
    l.asIntBuffer().put(labels, 0, rows);
    Map<String, Npy.Array> m = new LinkedHashMap<>();
    m.put("features", new Npy.Array("<f2", new int[] {rows, rowElements}, f.array()));
    m.put("scales", new Npy.Array("<f4", new int[] {rows}, s.array()));
    m.put("labels", new Npy.Array("<i4", new int[] {rows}, l.array()));
    return Npy.writeNpz(m);
  }

  /** Reads {@link #toNpz} bytes; IOException when they do not fit {@code rowElements}. */
  public static FeatureCache fromNpz(byte[] npz, int rowElements) throws IOException {
    Map<String, Npy.Array> m = Npy.readNpz(npz, Integer.MAX_VALUE);
    if (m == null || !m.containsKey("features") || !m.containsKey("scales") || !m.containsKey("labels")) {
      throw new IOException("not a feature cache");
    }
    Npy.Array f = m.get("features");
    int n = m.get("labels").shape.length == 1 ? m.get("labels").shape[0] : -1;
    if (!f.descr.equals("<f2") || f.shape.length != 2 || f.shape[0] != n || f.shape[1] != rowElements
        || m.get("scales").shape[0] != n) {
      throw new IOException("feature cache of another model");
    }
    FeatureCache c = new FeatureCache(rowElements);
    c.ensure(n);
    ByteBuffer.wrap(f.raw).order(ByteOrder.LITTLE_ENDIAN).asShortBuffer().get(c.features, 0, n * rowElements);
    System.arraycopy(m.get("scales").floats(), 0, c.scales, 0, n);
    float[] l = m.get("labels").floats();
    for (int i = 0; i < n; i++) {
      c.labels[i] = (int) l[i];
    }
    c.rows = n;
    return c;
  }
}

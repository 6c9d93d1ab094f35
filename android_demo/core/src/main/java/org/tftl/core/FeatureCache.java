package org.tftl.core;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.Map;

/**
 * Trunk features of every collected photo, extracted once (the {@code extract} signature) and kept
 * instead of the photo, exactly as tftl-train's CachedFeatures: {@code views} rows per photo (the
 * recipe's cache_views augmented views, drawn once and never regenerated), each float16 times a
 * float32 scale per row (the row's max |x|, 1 when zero or not finite), so float16 keeps ~3
 * significant digits whatever the features' magnitude. Photos are added as they come; persisted as
 * an .npz that the app reads back within {@link #MAX_BYTES}, so a cache never grows beyond it.
 */
public final class FeatureCache {
  /** The most bytes of features a cache may hold: the app reads features.npz bounded by this. */
  public static final long MAX_BYTES = ModelFile.MAX_FILE_BYTES;

  public final int rowElements;
  /** Rows (views) per photo. */
  public final int views;
  private short[] features = new short[0];
  private float[] scales = new float[0];
  private int[] labels = new int[0];
  private int rows;

  public FeatureCache(int rowElements) {
    this(rowElements, 1);
  }

  public FeatureCache(int rowElements, int views) {
    if (views < 1 || views > Recipe.MAX_VIEWS + 1) {
      throw new IllegalArgumentException("views must be 1.." + (Recipe.MAX_VIEWS + 1) + ", got " + views);
    }
    this.rowElements = rowElements;
    this.views = views;
  }

  /** Photos held. */
  public int size() {
    return rows;
  }

  public int label(int row) {
    return labels[row];
  }

  /** Bytes of the float16 features: views x photos x row elements x 2 (the scales add 4 per view). */
  public long featureBytes() {
    return 2L * views * rows * rowElements;
  }

  /**
   * Adds {@code count} photos: {@code rowsData} holds each photo's {@code views} float32 rows in turn,
   * {@code rowLabels} their class indices; returns the first photo's index. Refuses, changing nothing,
   * when the cache would hold more than {@link #MAX_BYTES}.
   */
  public int add(float[] rowsData, int[] rowLabels) {
    int count = rowLabels.length;
    int per = views * rowElements;
    long bytes = 2L * (rows + count) * per;
    if (bytes > MAX_BYTES) {
      throw new TftlException("the feature cache would need " + (bytes >> 20) + " MiB for " + (rows + count)
          + " photos x " + views + " views, more than the " + (MAX_BYTES >> 20) + " MiB the app keeps — remove "
          + "photos, or export the model with fewer cache_views in its recipe");
    }
    if (rowsData.length != (long) count * per) {
      throw new IllegalArgumentException("features hold " + rowsData.length + " values, not " + count + " x " + views
          + " x " + rowElements);
    }
    int first = rows;
    ensure(rows + count);
    for (int r = 0; r < count * views; r++) {
      float max = 0f;
      for (int i = 0; i < rowElements; i++) {
        max = Math.max(max, Math.abs(rowsData[r * rowElements + i]));
      }
      float scale = Float.isFinite(max) && max > 0 ? max : 1f;
      int at = (first * views + r) * rowElements;
      for (int i = 0; i < rowElements; i++) {
        features[at + i] = Half.fromFloat(rowsData[r * rowElements + i] / scale);
      }
      scales[first * views + r] = scale;
    }
    System.arraycopy(rowLabels, 0, labels, first, count);
    rows += count;
    return first;
  }

  private void ensure(int capacity) {
    if (capacity > labels.length) {
      int n = Math.max(capacity, labels.length * 2 + 8);
      features = Arrays.copyOf(features, n * views * rowElements);
      scales = Arrays.copyOf(scales, n * views);
      labels = Arrays.copyOf(labels, n);
    }
  }

  /** float32 features of view 0 of photos {@code index}, concatenated. */
  public float[] get(int[] index) {
    return get(index, null);
  }

  /**
   * float32 features of photos {@code index}, view {@code view[index[r]]} of each (null: view 0),
   * as CachedFeatures.get: the float16 value times the row's scale.
   */
  public float[] get(int[] index, int[] view) {
    float[] out = new float[index.length * rowElements];
    for (int r = 0; r < index.length; r++) {
      int row = index[r] * views + (view == null ? 0 : view[index[r]]);
      float scale = scales[row];
      for (int i = 0; i < rowElements; i++) {
        out[r * rowElements + i] = Half.toFloat(features[row * rowElements + i]) * scale;
      }
    }
    return out;
  }

  /** A new cache of photos {@code index} with all their views (values and scales as they are). */
  public FeatureCache select(int[] index) {
    return select(index, 0, views);
  }

  /** A new cache of photos {@code index} with views firstView .. firstView + count - 1 of each. */
  public FeatureCache select(int[] index, int firstView, int count) {
    if (firstView < 0 || count < 1 || firstView + count > views) {
      throw new IllegalArgumentException("views " + firstView + " + " + count + " of " + views);
    }
    FeatureCache c = new FeatureCache(rowElements, count);
    c.ensure(index.length);
    for (int r = 0; r < index.length; r++) {
      int from = index[r] * views + firstView;
      System.arraycopy(features, from * rowElements, c.features, r * count * rowElements, count * rowElements);
      System.arraycopy(scales, from, c.scales, r * count, count);
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
        System.arraycopy(features, r * views * rowElements, features, w * views * rowElements, views * rowElements);
        System.arraycopy(scales, r * views, scales, w * views, views);
        labels[w] = labels[r];
        w++;
      }
    }
    rows = w;
  }

  /** The cache as .npz bytes: features float16 [n, views, row], scales float32 [n, views], labels int32 [n]. */
  public byte[] toNpz() {
    ByteBuffer f = ByteBuffer.allocate(rows * views * rowElements * 2).order(ByteOrder.LITTLE_ENDIAN);
    f.asShortBuffer().put(features, 0, rows * views * rowElements);
    ByteBuffer s = ByteBuffer.allocate(rows * views * 4).order(ByteOrder.LITTLE_ENDIAN);
    s.asFloatBuffer().put(scales, 0, rows * views);
    ByteBuffer l = ByteBuffer.allocate(rows * 4).order(ByteOrder.LITTLE_ENDIAN);
    l.asIntBuffer().put(labels, 0, rows);
    Map<String, Npy.Array> m = new LinkedHashMap<>();
    m.put("features", new Npy.Array("<f2", new int[] {rows, views, rowElements}, f.array()));
    m.put("scales", new Npy.Array("<f4", new int[] {rows, views}, s.array()));
    m.put("labels", new Npy.Array("<i4", new int[] {rows}, l.array()));
    return Npy.writeNpz(m);
  }

  /**
   * Reads {@link #toNpz} bytes (a 2-D cache of before views counts as 1 view); IOException when they
   * do not fit {@code rowElements} and {@code views}.
   */
  public static FeatureCache fromNpz(byte[] npz, int rowElements, int views) throws IOException {
    Map<String, Npy.Array> m = Npy.readNpz(npz, Integer.MAX_VALUE);
    if (m == null || !m.containsKey("features") || !m.containsKey("scales") || !m.containsKey("labels")) {
      throw new IOException("not a feature cache");
    }
    Npy.Array f = m.get("features");
    int n = m.get("labels").shape.length == 1 ? m.get("labels").shape[0] : -1;
    int held = f.shape.length == 3 ? f.shape[1] : 1;
    if (!f.descr.equals("<f2") || f.shape.length < 2 || f.shape.length > 3 || f.shape[0] != n
        || f.shape[f.shape.length - 1] != rowElements || m.get("scales").shape[0] != n) {
      throw new IOException("feature cache of another model");
    }
    if (held != views) {
      throw new IOException("the feature cache holds " + held + " view(s) per photo, the model's recipe "
          + views + " — remove the photos and add them again");
    }
    FeatureCache c = new FeatureCache(rowElements, views);
    c.ensure(n);
    ByteBuffer.wrap(f.raw).order(ByteOrder.LITTLE_ENDIAN).asShortBuffer()
        .get(c.features, 0, n * views * rowElements);
    System.arraycopy(m.get("scales").floats(), 0, c.scales, 0, n * views);
    float[] l = m.get("labels").floats();
    for (int i = 0; i < n; i++) {
      c.labels[i] = (int) l[i];
    }
    c.rows = n;
    return c;
  }
}

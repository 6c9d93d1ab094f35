package org.tftl.core;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * A tftl model ready to run (tftl/runtime/session.py Session): the model file plus an
 * interpreter, with batch padding, the training step and the trained state. A fine-tuned file's
 * state.npz is restored on open, so it predicts with its trained weights at once.
 *
 * <p>Buffers are allocated once per signature and reused. Not thread-safe: one trainer at a time.
 */
public final class TftlModel implements AutoCloseable {
  public static final String INFER = "infer";
  public static final String EXTRACT = "extract";
  public static final String TRAIN_FEATURES = "train_features";
  public static final String INFER_FEATURES = "infer_features";
  public static final String SAVE = "save";
  public static final String RESTORE = "restore";
  /** features -> the classifier's input (optional: files exported before issue 19 lack it). */
  public static final String EMBED_FEATURES = "embed_features";
  static final List<String> TRAIN_SIGNATURES = Arrays.asList(EXTRACT, TRAIN_FEATURES, INFER_FEATURES, SAVE, RESTORE);

  /**
   * Creates an interpreter for the flatbuffer of a model file (the Android Interpreter, which maps
   * the stored file instead of copying it, or the host backend).
   */
  public interface Factory {
    SignatureInterpreter create(ModelFile file);
  }

  public final ModelFile file;
  public final SignatureInterpreter interpreter;
  public final int batch;
  public final int imageSize;
  public final int featureElements;
  public final int numLabels;
  private final Map<String, Map<String, ByteBuffer>> inputs = new HashMap<>();
  private final Map<String, Map<String, ByteBuffer>> outputs = new HashMap<>();
  private final Map<String, int[]> stateShapes = new LinkedHashMap<>();

  /**
   * Opens {@code file} with an interpreter from {@code factory}; restores an embedded state.npz.
   *
   * @throws TftlException when the model lacks the signatures tftl needs or its state does not fit
   */
  public TftlModel(ModelFile file, Factory factory) {
    Blocking.check(Blocking.Kind.INTERPRETER, "building the interpreter of " + file.where);
    this.file = file;
    this.interpreter = factory.create(file);
    this.batch = file.meta.batch;
    this.imageSize = file.meta.imageSize;
    this.featureElements = file.meta.featureElements();
    this.numLabels = file.meta.numLabels;
    List<String> have = Arrays.asList(interpreter.getSignatureKeys());
    for (String name : TRAIN_SIGNATURES) {
      if (!have.contains(name)) {
        interpreter.close();
        throw new TftlException(file.where + " has no " + name + " signature (it has " + have
            + "), so it cannot be trained — export a trainable model with python -m converters.export");
      }
    }
    for (String name : interpreter.getSignatureInputs(RESTORE)) {
      stateShapes.put(name, interpreter.getInputShape(RESTORE, name));
    }
    if (file.stateNpz != null) {
      try {
        Map<String, Npy.Array> state = Npy.readNpz(file.stateNpz, ModelFile.MAX_FILE_BYTES);
        restore(state, ModelFile.STATE + " of " + file.where);
      } catch (java.io.IOException e) {
        interpreter.close();
        throw new TftlException(file.where + " has a damaged " + ModelFile.STATE + " (" + e.getMessage()
            + ") — train it again");
      }
    }
  }

  static ByteBuffer direct(int bytes) {
    return ByteBuffer.allocateDirect(bytes).order(ByteOrder.nativeOrder());
  }

  /** Copies floats into {@code b} at float offset {@code at} (Buffer casts: Android API 24 lacks the covariant overrides). */
  static void put(ByteBuffer b, int at, float[] src, int from, int len) {
    java.nio.FloatBuffer fb = b.asFloatBuffer();
    ((java.nio.Buffer) fb).position(at);
    fb.put(src, from, len);
  }

  private static int elements(int[] shape) {
    int n = 1;
    for (int d : shape) {
      n *= d;
    }
    return n;
  }

  private Map<String, ByteBuffer> buffers(String sig, boolean in) {
    Map<String, Map<String, ByteBuffer>> cache = in ? inputs : outputs;
    Map<String, ByteBuffer> m = cache.get(sig);
    if (m == null) {
      m = new LinkedHashMap<>();
      String[] names = in ? interpreter.getSignatureInputs(sig) : interpreter.getSignatureOutputs(sig);
      for (String n : names) {
        int[] shape = in ? interpreter.getInputShape(sig, n) : interpreter.getOutputShape(sig, n);
        m.put(n, direct(elements(shape) * 4));
      }
      cache.put(sig, m);
    }
    return m;
  }

  private void run(String sig) {
    Blocking.check(Blocking.Kind.INTERPRETER, sig);
    Map<String, Object> in = new LinkedHashMap<>(buffers(sig, true));
    Map<String, Object> out = new LinkedHashMap<>(buffers(sig, false));
    interpreter.runSignature(in, out, sig);
  }

  /** Runs {@code sig} (one input {@code key}, output {@code outKey}) on any number of rows, padding the last batch. */
  private float[] batched(String sig, String key, float[] rows, int rowLen, String outKey, int outLen) {
    int n = rows.length / rowLen;
    float[] result = new float[n * outLen];
    ByteBuffer in = buffers(sig, true).get(key);
    ByteBuffer out = buffers(sig, false).get(outKey);
    for (int start = 0; start < n; start += batch) {
      int count = Math.min(batch, n - start);
      ((java.nio.Buffer) in).clear();
      for (int i = 0; i < batch; i++) {
        int row = start + Math.min(i, count - 1);  // pad by repeating the last row, as session._pad
        put(in, i * rowLen, rows, row * rowLen, rowLen);
      }
      run(sig);
      ((java.nio.Buffer) out).clear();
      out.asFloatBuffer().get(result, start * outLen, count * outLen);
    }
    return result;
  }

  /** Class probabilities [n, K] for images [n, R, R, 3] (float 0..255, flattened). */
  public float[] predict(float[] images) {
    return batched(INFER, "images", images, imageSize * imageSize * 3, "probabilities", numLabels);
  }

  /** Frozen-trunk features [n, *feature_shape] for images [n, R, R, 3]. */
  public float[] extract(float[] images) {
    return batched(EXTRACT, "images", images, imageSize * imageSize * 3, "features", featureElements);
  }

  /** The classifier's input [n, D] from trunk features (the {@code embed_features} signature). */
  public float[] embedFeatures(float[] features) {
    if (!Arrays.asList(interpreter.getSignatureKeys()).contains(EMBED_FEATURES)) {
      throw new TftlException(file.where + " has no " + EMBED_FEATURES + " signature, which fitting the head first "
          + "(recipe head_init probe) needs — export it again with python -m converters.export");
    }
    int dim = interpreter.getOutputShape(EMBED_FEATURES, "embedding")[1];
    return batched(EMBED_FEATURES, "features", features, featureElements, "embedding", dim);
  }

  /** Class probabilities [n, K] from trunk features. */
  public float[] predictFeatures(float[] features) {
    return batched(INFER_FEATURES, "features", features, featureElements, "probabilities", numLabels);
  }

  /** The loss of one step and the step's probabilities (before its update) of the real rows. */
  public static final class Step {
    public final float loss;
    public final float[] probabilities;

    Step(float loss, float[] probabilities) {
      this.loss = loss;
      this.probabilities = probabilities;
    }
  }

  /**
   * One train_features step on 1..batch rows; missing rows repeat the last one with sample_weight 0
   * (session.train_features_step).
   */
  public Step trainFeaturesStep(float[] features, int[] labels, float learningRate) {
    int n = labels.length;
    if (n < 1 || n > batch || features.length != n * featureElements) {
      throw new IllegalArgumentException("train_features_step needs 1.." + batch + " rows, got " + n);
    }
    Map<String, ByteBuffer> in = buffers(TRAIN_FEATURES, true);
    ByteBuffer f = in.get("features");
    ByteBuffer y = in.get("labels");
    ByteBuffer w = in.get("sample_weight");
    for (int i = 0; i < batch; i++) {
      int row = Math.min(i, n - 1);
      put(f, i * featureElements, features, row * featureElements, featureElements);
      y.putInt(4 * i, labels[row]);
      w.putFloat(4 * i, i < n ? 1f : 0f);
    }
    in.get("learning_rate").putFloat(0, learningRate);
    run(TRAIN_FEATURES);
    Map<String, ByteBuffer> out = buffers(TRAIN_FEATURES, false);
    float[] probs = new float[n * numLabels];
    ByteBuffer p = out.get("probabilities");
    ((java.nio.Buffer) p).clear();
    p.asFloatBuffer().get(probs);
    return new Step(out.get("loss").getFloat(0), probs);
  }

  /** Every state tensor of {@code save} (names sorted as the model lists them), as float32 arrays. */
  public Map<String, Npy.Array> state() {
    buffers(SAVE, true).get("token").putFloat(0, 0f);
    run(SAVE);
    Map<String, Npy.Array> out = new LinkedHashMap<>();
    for (Map.Entry<String, ByteBuffer> e : buffers(SAVE, false).entrySet()) {
      int[] shape = interpreter.getOutputShape(SAVE, e.getKey());
      float[] v = new float[elements(shape)];
      ByteBuffer b = e.getValue();
      ((java.nio.Buffer) b).clear();
      b.asFloatBuffer().get(v);
      out.put(e.getKey(), Npy.Array.ofFloats(v, shape));
    }
    return out;
  }

  /** {state name: shape} as restore declares them. */
  public Map<String, int[]> stateShapes() {
    return stateShapes;
  }

  /**
   * Loads a state (from {@link #state}, a checkpoint or a fine-tuned file): every restore input, or
   * every input but the optimizer group (a deployable file; the interpreter keeps its own optimizer
   * state). Names and shapes are checked first; a scalar opt_step is accepted as [1]; non-finite
   * values are refused.
   */
  public void restore(Map<String, Npy.Array> state, String what) {
    List<String> missing = new ArrayList<>(stateShapes.keySet());
    missing.removeAll(state.keySet());
    List<String> optimizer = file.meta.stateGroups.get("optimizer");
    if (!missing.isEmpty() && new java.util.HashSet<>(missing).equals(new java.util.HashSet<>(optimizer))) {
      // A deployable fine-tuned file carries no optimizer state: keep this interpreter's own.
      Map<String, Npy.Array> full = new java.util.LinkedHashMap<>(state);
      Map<String, Npy.Array> own = state();
      for (String n : optimizer) {
        full.put(n, own.get(n));
      }
      state = full;
      missing.clear();
    }
    List<String> extra = new ArrayList<>(state.keySet());
    extra.removeAll(stateShapes.keySet());
    if (!missing.isEmpty() || !extra.isEmpty()) {
      throw new TftlException(what + " does not fit " + file.where + ": missing " + head(missing) + ", unknown "
          + head(extra) + " — it belongs to another model");
    }
    Map<String, ByteBuffer> in = buffers(RESTORE, true);
    for (Map.Entry<String, int[]> e : stateShapes.entrySet()) {
      Npy.Array a = state.get(e.getKey());
      int[] want = e.getValue();
      boolean scalarOk = a.shape.length == 0 && elements(want) == 1;
      if (!Arrays.equals(a.shape, want) && !scalarOk) {
        throw new TftlException(what + " does not fit " + file.where + ": " + e.getKey() + " has shape "
            + Arrays.toString(a.shape) + ", the model has " + Arrays.toString(want) + " — it belongs to another model");
      }
      float[] v = a.floats();
      for (float x : v) {
        if (!Float.isFinite(x)) {
          throw new TftlException(what + " holds NaN or infinite values in " + e.getKey()
              + " — use an earlier checkpoint or train again");
        }
      }
      ByteBuffer b = in.get(e.getKey());
      ((java.nio.Buffer) b).clear();
      b.asFloatBuffer().put(v);
    }
    run(RESTORE);
  }

  private static String head(List<String> names) {
    return names.size() > 3 ? names.subList(0, 3) + "..." : names.toString();
  }

  @Override
  public void close() {
    Blocking.check(Blocking.Kind.INTERPRETER, "closing the interpreter");
    interpreter.close();
  }
}

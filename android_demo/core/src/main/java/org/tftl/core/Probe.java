package org.tftl.core;

import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

/**
 * The linear probe of a recipe's head_init "probe" (tftl/runtime/probe.py, step for step): the
 * classifier fitted on fixed embeddings before fine-tuning (LP-FT). L2-penalised softmax regression on
 * standardised features by Nesterov-accelerated gradient descent with step 1/L, the penalty chosen by
 * stratified 3-fold cross-validation over {@link #L2_GRID} (probe.FOLD_RULE), the standardisation
 * folded into the returned kernel and bias. contract/vectors/probe.json holds Python's fits, which
 * this class and web_demo/src/probe.js reproduce. Matrices are row-major double arrays.
 */
public final class Probe {
  public static final double[] L2_GRID = {1e-4, 1e-3, 1e-2, 1e-1};
  public static final int FOLDS = 3;
  public static final int STEPS = 1500;

  /** A fitted head: logits = x @ kernel [d, k] + bias [k]. */
  public static final class Fit {
    public final float[] kernel;
    public final float[] bias;
    public final double l2;
    /** Mean CV accuracy per L2_GRID entry. */
    public final double[] cvAccuracy;

    Fit(float[] kernel, float[] bias, double l2, double[] cvAccuracy) {
      this.kernel = kernel;
      this.bias = bias;
      this.l2 = l2;
      this.cvAccuracy = cvAccuracy;
    }
  }

  private Probe() {}

  /** probe.folds_of without groups: the j-th row of each class is in fold j % folds. */
  static int[] folds(int[] y) {
    Map<Integer, Integer> seen = new HashMap<>();
    int[] fold = new int[y.length];
    for (int i = 0; i < y.length; i++) {
      int j = seen.getOrDefault(y[i], 0);
      seen.put(y[i], j + 1);
      fold[i] = j % FOLDS;
    }
    return fold;
  }

  /** a [n, m] @ b [m, p]. */
  static double[] matmul(double[] a, double[] b, int n, int m, int p) {
    double[] out = new double[n * p];
    for (int i = 0; i < n; i++) {
      for (int j = 0; j < m; j++) {
        double v = a[i * m + j];
        if (v == 0) {
          continue;
        }
        for (int q = 0; q < p; q++) {
          out[i * p + q] += v * b[j * p + q];
        }
      }
    }
    return out;
  }

  /** x x^T [n, n] of x [n, d]. */
  static double[] gram(double[] x, int n, int d) {
    double[] g = new double[n * n];
    for (int i = 0; i < n; i++) {
      for (int j = 0; j <= i; j++) {
        double s = 0;
        for (int q = 0; q < d; q++) {
          s += x[i * d + q] * x[j * d + q];
        }
        g[i * n + j] = s;
        g[j * n + i] = s;
      }
    }
    return g;
  }

  /** x^T x [d, d] of x [n, d]. */
  static double[] cross(double[] x, int n, int d) {
    double[] c = new double[d * d];
    for (int r = 0; r < n; r++) {
      for (int i = 0; i < d; i++) {
        double v = x[r * d + i];
        for (int j = 0; j <= i; j++) {
          c[i * d + j] += v * x[r * d + j];
        }
      }
    }
    for (int i = 0; i < d; i++) {
      for (int j = 0; j < i; j++) {
        c[j * d + i] = c[i * d + j];
      }
    }
    return c;
  }

  /** The largest eigenvalue of a symmetric positive semi-definite [m, m] matrix: power iteration until the residual vanishes. */
  static double topEigenvalue(double[] a, int m) {
    double[] v = new double[m];
    for (int i = 0; i < m; i++) {
      v[i] = 1 + ((i * 7919L) % 101) / 101.0;
    }
    double lambda = 0;
    for (int it = 0; it < 100_000; it++) {
      double[] w = matmul(a, v, m, m, 1);
      double vv = 0;
      double vw = 0;
      for (int i = 0; i < m; i++) {
        vv += v[i] * v[i];
        vw += v[i] * w[i];
      }
      lambda = vw / vv;
      double res = 0;
      double ww = 0;
      for (int i = 0; i < m; i++) {
        res += (w[i] - lambda * v[i]) * (w[i] - lambda * v[i]);
        ww += w[i] * w[i];
      }
      if (ww == 0) {
        return 0;
      }
      if (Math.sqrt(res / vv) <= 1e-11 * Math.abs(lambda)) {
        return lambda;
      }
      double norm = Math.sqrt(ww);
      for (int i = 0; i < m; i++) {
        v[i] = w[i] / norm;
      }
    }
    return lambda;
  }

  /** ||[x, 1]||_2^2 (the squared spectral norm), from the smaller of its two Gram forms. */
  static double squaredNorm(double[] x, int n, int d) {
    if (n <= d + 1) {
      double[] g = gram(x, n, d);
      for (int i = 0; i < g.length; i++) {
        g[i] += 1;
      }
      return topEigenvalue(g, n);
    }
    double[] xb = new double[n * (d + 1)];
    for (int r = 0; r < n; r++) {
      System.arraycopy(x, r * d, xb, r * (d + 1), d);
      xb[r * (d + 1) + d] = 1;
    }
    return topEigenvalue(cross(xb, n, d + 1), d + 1);
  }

  /** In place: row-wise softmax of z [n, k] minus the one-hot labels, over n (the loss gradient at the logits). */
  private static void softmaxGrad(double[] z, int[] y, int n, int k) {
    for (int i = 0; i < n; i++) {
      double max = Double.NEGATIVE_INFINITY;
      for (int c = 0; c < k; c++) {
        max = Math.max(max, z[i * k + c]);
      }
      double sum = 0;
      for (int c = 0; c < k; c++) {
        z[i * k + c] = Math.exp(z[i * k + c] - max);
        sum += z[i * k + c];
      }
      for (int c = 0; c < k; c++) {
        z[i * k + c] = (z[i * k + c] / sum - (y[i] == c ? 1 : 0)) / n;
      }
    }
  }

  /** probe.fit_softmax_gram (n < d) or probe.fit_softmax: {w [d * k], b [k]}. */
  static double[][] solve(double[] x, int[] y, int n, int d, int k, double l2, int steps) {
    double lip = 0.5 * squaredNorm(x, n, d) / n + l2;
    boolean useGram = n < d;
    double[] g = useGram ? gram(x, n, d) : null;
    int rows = useGram ? n : d;
    double[] a = new double[rows * k];
    double[] b = new double[k];
    double[] prevA = a;
    double[] prevB = b;
    for (int t = 0; t < steps; t++) {
      double beta = (double) t / (t + 3);
      double[] va = new double[a.length];
      for (int i = 0; i < a.length; i++) {
        va[i] = a[i] + beta * (a[i] - prevA[i]);
      }
      double[] vb = new double[k];
      for (int c = 0; c < k; c++) {
        vb[c] = b[c] + beta * (b[c] - prevB[c]);
      }
      double[] z = useGram ? matmul(g, va, n, n, k) : matmul(x, va, n, d, k);
      for (int i = 0; i < n; i++) {
        for (int c = 0; c < k; c++) {
          z[i * k + c] += vb[c];
        }
      }
      softmaxGrad(z, y, n, k);
      double[] grad = useGram ? z : transposeTimes(x, z, n, d, k);
      prevA = a;
      prevB = b;
      a = new double[va.length];
      for (int i = 0; i < va.length; i++) {
        a[i] = va[i] - (grad[i] + l2 * va[i]) / lip;
      }
      b = new double[k];
      for (int c = 0; c < k; c++) {
        double gb = 0;
        for (int i = 0; i < n; i++) {
          gb += z[i * k + c];
        }
        b[c] = vb[c] - gb / lip;
      }
    }
    return new double[][] {useGram ? transposeTimes(x, a, n, d, k) : a, b};
  }

  /** x^T [d, n] @ m [n, k]. */
  private static double[] transposeTimes(double[] x, double[] m, int n, int d, int k) {
    double[] out = new double[d * k];
    for (int i = 0; i < n; i++) {
      for (int q = 0; q < d; q++) {
        double xv = x[i * d + q];
        for (int c = 0; c < k; c++) {
          out[q * k + c] += xv * m[i * k + c];
        }
      }
    }
    return out;
  }

  /** {mean, standard deviation + 1e-6} of each column over the listed rows of x [*, d]. */
  private static double[][] moments(double[] x, int[] rows, int d) {
    double[] mu = new double[d];
    double[] sd = new double[d];
    for (int r : rows) {
      for (int q = 0; q < d; q++) {
        mu[q] += x[r * d + q];
      }
    }
    for (int q = 0; q < d; q++) {
      mu[q] /= rows.length;
    }
    for (int r : rows) {
      for (int q = 0; q < d; q++) {
        sd[q] += (x[r * d + q] - mu[q]) * (x[r * d + q] - mu[q]);
      }
    }
    for (int q = 0; q < d; q++) {
      sd[q] = Math.sqrt(sd[q] / rows.length) + 1e-6;
    }
    return new double[][] {mu, sd};
  }

  private static double[] standardised(double[] x, int[] rows, int d, double[][] m) {
    double[] out = new double[rows.length * d];
    for (int i = 0; i < rows.length; i++) {
      for (int q = 0; q < d; q++) {
        out[i * d + q] = (x[rows[i] * d + q] - m[0][q]) / m[1][q];
      }
    }
    return out;
  }

  private static int[] select(int[] v, int[] rows) {
    int[] out = new int[rows.length];
    for (int i = 0; i < rows.length; i++) {
      out[i] = v[rows[i]];
    }
    return out;
  }

  /** probe.choose_l2: the mean CV accuracy of each L2_GRID entry (the best, first on a tie, is chosen). */
  static double[] cvAccuracy(double[] x, int[] y, int n, int d, int k) {
    int[] fold = folds(y);
    double[] cv = new double[L2_GRID.length];
    for (int l = 0; l < L2_GRID.length; l++) {
      double sum = 0;
      int count = 0;
      for (int f = 0; f < FOLDS; f++) {
        List<Integer> tr = new ArrayList<>();
        List<Integer> va = new ArrayList<>();
        for (int i = 0; i < n; i++) {
          (fold[i] == f ? va : tr).add(i);
        }
        if (tr.isEmpty() || va.isEmpty()) {
          continue;
        }
        int[] trRows = ints(tr);
        int[] vaRows = ints(va);
        double[][] m = moments(x, trRows, d);
        double[][] wb = solve(standardised(x, trRows, d, m), select(y, trRows), trRows.length, d, k, L2_GRID[l], STEPS);
        double[] logits = matmul(standardised(x, vaRows, d, m), wb[0], vaRows.length, d, k);
        int right = 0;
        for (int i = 0; i < vaRows.length; i++) {
          int best = 0;
          for (int c = 1; c < k; c++) {
            if (logits[i * k + c] + wb[1][c] > logits[i * k + best] + wb[1][best]) {
              best = c;
            }
          }
          right += best == y[vaRows[i]] ? 1 : 0;
        }
        sum += (double) right / vaRows.length;
        count++;
      }
      cv[l] = count == 0 ? 0 : sum / count;
    }
    return cv;
  }

  /** probe.fit_head: the probe on raw embeddings x [n, d] with labels y of k classes. */
  public static Fit fitHead(double[] x, int[] y, int n, int d, int k) {
    double[] cv = cvAccuracy(x, y, n, d, k);
    int best = 0;
    for (int l = 1; l < cv.length; l++) {
      if (cv[l] > cv[best]) {
        best = l;
      }
    }
    int[] all = new int[n];
    for (int i = 0; i < n; i++) {
      all[i] = i;
    }
    double[][] m = moments(x, all, d);
    double[][] wb = solve(standardised(x, all, d, m), y, n, d, k, L2_GRID[best], STEPS);
    float[] kernel = new float[d * k];
    float[] bias = new float[k];
    for (int c = 0; c < k; c++) {
      double shift = 0;
      for (int q = 0; q < d; q++) {
        double kv = wb[0][q * k + c] / m[1][q];
        kernel[q * k + c] = (float) kv;
        shift += m[0][q] * kv;
      }
      bias[c] = (float) (wb[1][c] - shift);
    }
    return new Fit(kernel, bias, L2_GRID[best], cv);
  }

  /** The list as an int array (no streams or lambdas: dx targets API 24). */
  private static int[] ints(java.util.List<Integer> list) {
    int[] out = new int[list.size()];
    for (int i = 0; i < out.length; i++) {
      out[i] = list.get(i);
    }
    return out;
  }
}

package org.tftl.core;

/**
 * The one thread assertion of the core. Every blocking entry point — file reads and writes, photo
 * decoding, building and running the interpreter (extract, training steps, state), checkpoints —
 * calls {@link #check} before it starts. The core checks no thread itself (it stays plain Java):
 * an app installs a {@link Guard}. The Android app's refuses the main thread, where such work
 * freezes the screen (TftlApp); its tests install one that also records what ran where.
 */
public final class Blocking {
  /** What kind of blocking work is about to run. */
  public enum Kind { FILE, DECODE, INTERPRETER, CHECKPOINT }

  /** Decides whether the calling thread may do {@code kind} work; throws to refuse. */
  public interface Guard {
    void check(Kind kind, String what);
  }

  /** The default: any thread may block (hosts, CLIs, tests). */
  public static final Guard ANY_THREAD = new Guard() {
    @Override
    public void check(Kind kind, String what) {
      // no rule
    }
  };

  private static volatile Guard guard = ANY_THREAD;

  private Blocking() {}

  /** Makes {@code g} the guard of every later blocking call (null: {@link #ANY_THREAD}). */
  public static void install(Guard g) {
    guard = g == null ? ANY_THREAD : g;
  }

  public static Guard installed() {
    return guard;
  }

  /** Called first by each blocking entry point; the installed guard may throw. */
  public static void check(Kind kind, String what) {
    guard.check(kind, what);
  }
}

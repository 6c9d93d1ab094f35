package org.tftl.core;

import com.google.gson.JsonArray;
import com.google.gson.JsonElement;
import com.google.gson.JsonObject;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.HashSet;
import java.util.List;

/**
 * tftl.json {@code recipe} (contract.Recipe): how every host fine-tunes the file unless told otherwise,
 * validated by exactly Python's rules (contract/vectors/metadata.json and files.json decide). Absent or
 * null: {@link #LEGACY}. lr: peak learning rate (warm-up, then cosine decay); a run takes
 * max(epochs, ceil(min_steps / steps per epoch)) epochs; warmupSteps null: min(50, total / 10);
 * cacheViews: augmented views cached per photo; headInit "probe": fit the classifier {@code classifier}
 * (kernel, bias) as a linear probe ({@link Probe}) on embed_features before the first step.
 */
public final class Recipe {
  public static final List<String> HEAD_INITS = Collections.unmodifiableList(Arrays.asList("none", "probe"));
  public static final int MAX_VIEWS = 64;
  /** What a file without {@code recipe} trains with (the defaults before issue 19). */
  public static final Recipe LEGACY = new Recipe(5e-4, 10, 500, null, 2, "none", Collections.emptyList());

  public final double lr;
  public final int epochs;
  public final int minSteps;
  public final Integer warmupSteps;
  public final int cacheViews;
  public final String headInit;
  /** [kernel, bias] state names, or empty. */
  public final List<String> classifier;

  private Recipe(double lr, int epochs, int minSteps, Integer warmupSteps, int cacheViews, String headInit,
      List<String> classifier) {
    this.lr = lr;
    this.epochs = epochs;
    this.minSteps = minSteps;
    this.warmupSteps = warmupSteps;
    this.cacheViews = cacheViews;
    this.headInit = headInit;
    this.classifier = classifier;
  }

  /** contract.Recipe.from_dict, in its order; {@code e} null or JSON null: LEGACY. */
  static Recipe parse(JsonElement e, List<String> stateNames, String where) {
    if (e == null || e.isJsonNull()) {
      return LEGACY;
    }
    if (!e.isJsonObject()) {
      throw ModelMetadata.bad(where, "field 'recipe' must be an object");
    }
    JsonObject o = e.getAsJsonObject();
    JsonElement lr = o.get("lr");
    if (lr != null && !(lr.isJsonPrimitive() && lr.getAsJsonPrimitive().isNumber()
        && lr.getAsDouble() > 0 && lr.getAsDouble() <= 1)) {
      throw ModelMetadata.bad(where, "field 'recipe.lr' must be a number in (0, 1], got " + lr);
    }
    JsonElement hi = o.get("head_init");
    String headInit = hi == null ? LEGACY.headInit
        : hi.isJsonPrimitive() && hi.getAsJsonPrimitive().isString() ? hi.getAsString() : null;
    if (!HEAD_INITS.contains(headInit)) {
      throw ModelMetadata.bad(where, "field 'recipe.head_init' must be one of " + String.join(", ", HEAD_INITS)
          + ", got " + hi);
    }
    List<String> classifier = classifier(o.get("classifier"), stateNames, headInit);
    if (classifier == null) {
      throw ModelMetadata.bad(where, "field 'recipe.classifier' must name the classifier's kernel and bias among "
          + "'state_names' (needed by head_init 'probe')");
    }
    String in = where + " recipe";
    JsonElement warmup = o.get("warmup_steps");
    return new Recipe(lr == null ? LEGACY.lr : lr.getAsDouble(),
        ModelMetadata.integer(o, "epochs", 1, 100_000, in, LEGACY.epochs),
        ModelMetadata.integer(o, "min_steps", 0, 10_000_000, in, LEGACY.minSteps),
        warmup == null || warmup.isJsonNull() ? null : ModelMetadata.integer(o, "warmup_steps", 0, 10_000_000, in, null),
        ModelMetadata.integer(o, "cache_views", 1, MAX_VIEWS, in, LEGACY.cacheViews), headInit, classifier);
  }

  /** [] or two distinct names of state_names (required for probe); null when the rule is broken. */
  private static List<String> classifier(JsonElement e, List<String> stateNames, String headInit) {
    JsonArray a = e == null ? new JsonArray() : e.isJsonArray() ? e.getAsJsonArray() : null;
    if (a == null || (a.size() == 0 && headInit.equals("probe")) || (a.size() != 0 && a.size() != 2)) {
      return null;
    }
    List<String> out = new ArrayList<>();
    for (JsonElement n : a) {
      if (!n.isJsonPrimitive() || !n.getAsJsonPrimitive().isString() || !stateNames.contains(n.getAsString())) {
        return null;
      }
      out.add(n.getAsString());
    }
    return new HashSet<>(out).size() == out.size() ? Collections.unmodifiableList(out) : null;
  }

  /** loop.default_epochs: max(epochs, ceil(min_steps / steps per epoch)) for {@code images} photos. */
  public int epochsFor(int images, int batch) {
    int steps = Math.max(1, (images + batch - 1) / batch);
    return Math.max(epochs, (minSteps + steps - 1) / steps);
  }

  /** loop.Schedule.resolved: the recipe's warm-up, else min(50, total / 10). */
  public int warmupFor(int totalSteps) {
    return warmupSteps != null ? warmupSteps : Math.min(50, totalSteps / 10);
  }

  /** spec.resolved_recipe: what a run on {@code images} photos at {@code batch} trains with. */
  public JsonObject resolved(int images, int batch) {
    int e = epochsFor(images, batch);
    int total = Math.max(1, (images + batch - 1) / batch) * e;
    JsonObject o = new JsonObject();
    o.addProperty("lr", lr);
    o.addProperty("epochs", e);
    o.addProperty("total_steps", total);
    o.addProperty("warmup_steps", warmupFor(total));
    o.addProperty("cache_views", cacheViews);
    o.addProperty("head_init", headInit);
    JsonArray c = new JsonArray();
    for (String name : classifier) {  // no lambdas: dx targets API 24
      c.add(name);
    }
    o.add("classifier", c);
    return o;
  }
}

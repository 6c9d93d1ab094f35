"""One definition of a training step, shared by the Keras reference trainer and the
TFLite training graph of `converters.export`.

The optimizer is written in plain TF ops over explicit slot variables (not a Keras
optimizer) so that its state can cross the TFLite `save` / `restore` signatures as named
tensors and the LiteRT step computes exactly what the Keras step computes. The loss has a
hand-written gradient (SparseSoftmaxCrossEntropyWithLogits is not a TFLite builtin).
"""

import numpy as np
import tensorflow as tf

from tftl.runtime.schedule import cosine_lr

OPTIMIZERS = ("adam", "sgd")


def cross_entropy(logits, labels, sample_weight=None):
    """Mean (weighted) softmax cross entropy; backward = (softmax - onehot) * w / sum(w)."""
    n, k = logits.shape
    if sample_weight is None:
        sample_weight = tf.ones([n], tf.float32)

    @tf.custom_gradient
    def op(logits, sample_weight):
        onehot = tf.one_hot(labels, k, dtype=tf.float32)
        logp = tf.nn.log_softmax(logits)
        total = tf.maximum(tf.reduce_sum(sample_weight), 1e-12)
        loss = -tf.reduce_sum(tf.reduce_sum(onehot * logp, axis=1) * sample_weight) / total

        def grad(dy):
            w = tf.reshape(sample_weight / total, [-1, 1])
            return dy * (tf.exp(logp) - onehot) * w, None

        return loss, grad

    return op(logits, sample_weight)


class Optimizer(tf.Module):
    """Adam (Keras defaults: beta1 0.9, beta2 0.999, epsilon 1e-7) or SGD with momentum 0.9.

    State is tf.Variables: `step` and one or two slots per trained variable, named after it.
    """

    def __init__(self, variables, kind="adam", beta1=0.9, beta2=0.999, epsilon=1e-7,
                 momentum=0.9):
        super().__init__(name="optimizer")
        if kind not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {kind!r}; choose one of {', '.join(OPTIMIZERS)}")
        self.kind = kind
        self.beta1, self.beta2, self.epsilon, self.momentum = beta1, beta2, epsilon, momentum
        self.step = tf.Variable(0.0, trainable=False, name="step")
        self.m = [tf.Variable(tf.zeros(v.shape), trainable=False, name="m") for v in variables]
        self.v = ([tf.Variable(tf.zeros(v.shape), trainable=False, name="v") for v in variables]
                  if kind == "adam" else [])

    def apply(self, variables, grads, lr):
        step = self.step.assign_add(1.0)
        if self.kind == "sgd":
            for var, g, m in zip(variables, grads, self.m):
                m_new = m.assign(m * self.momentum + g)
                var.assign_sub(lr * m_new)
            return
        b1, b2 = self.beta1, self.beta2
        lr_t = lr * tf.sqrt(1.0 - tf.pow(b2, step)) / (1.0 - tf.pow(b1, step))
        for var, g, m, v in zip(variables, grads, self.m, self.v):
            m_new = m.assign(b1 * m + (1.0 - b1) * g)
            v_new = v.assign(b2 * v + (1.0 - b2) * tf.square(g))
            var.assign_sub(lr_t * m_new / (tf.sqrt(v_new) + self.epsilon))


def trainable_tf_variables(model):
    """The tf.Variables behind `model.trainable_weights` (Keras 3 wraps them)."""
    return [v.value if hasattr(v, "value") and isinstance(v.value, tf.Variable) else v
            for v in model.trainable_weights]


def train_step(model, optimizer, variables, images, labels, learning_rate, sample_weight=None):
    """One optimizer step on a batch; returns the loss before the update."""
    with tf.GradientTape() as tape:
        logits = model(images, training=True)
        loss = cross_entropy(logits, labels, sample_weight)
    grads = tape.gradient(loss, variables)
    missing = [v.name for v, g in zip(variables, grads) if g is None]
    if missing:
        raise ValueError(f"no gradient reaches trainable variables {missing[:3]}")
    optimizer.apply(variables, grads, learning_rate)
    return loss


def fit(model, train_dir, *, val_dir=None, epochs=5, learning_rate=1e-3, batch_size=8,
        augment=True, seed=0, optimizer="adam", log=print):
    """Keras reference training of a tftl model on an image folder (one folder per class).

    Returns a history dict: per-epoch train loss and validation accuracy.
    """
    from tftl.runtime import data

    rng = np.random.default_rng(seed)
    size = model.plan.image_size
    train = data.ImageFolder(train_dir)
    val = data.ImageFolder(val_dir, labels=train.classes) if val_dir else None
    variables = trainable_tf_variables(model)
    opt = Optimizer(variables, optimizer)
    step_fn = tf.function(lambda x, y, lr: train_step(model, opt, variables, x, y, lr))
    steps_per_epoch = len(train) // batch_size
    total = steps_per_epoch * epochs
    history = {"loss": [], "val_accuracy": []}
    step = 0
    for epoch in range(epochs):
        losses = []
        for images, labels, _ in data.iterate_batches(train.samples, size, batch_size,
                                                      shuffle_rng=rng,
                                                      augment_rng=rng if augment else None,
                                                      drop_last=True):
            lr = cosine_lr(learning_rate, step, total, warmup_steps=min(50, total // 10))
            losses.append(float(step_fn(images, labels, tf.constant(lr, tf.float32))))
            step += 1
        history["loss"].append(float(np.mean(losses)))
        if val is not None:
            history["val_accuracy"].append(evaluate(model, val, batch_size))
        log(f"epoch {epoch + 1}/{epochs} loss {history['loss'][-1]:.4f}"
            + (f" val_acc {history['val_accuracy'][-1]:.4f}" if val is not None else ""))
    return history


def evaluate(model, folder, batch_size=8):
    """Top-1 accuracy of a model on an ImageFolder."""
    from tftl.runtime import data

    predict = tf.function(lambda x: model(x, training=False))
    correct = n = 0
    for images, labels, _ in data.iterate_batches(folder.samples, model.plan.image_size,
                                                  batch_size):
        pred = np.argmax(predict(images).numpy(), axis=1)
        correct += int((pred == labels).sum())
        n += len(labels)
    return correct / max(n, 1)

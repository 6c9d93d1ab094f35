"""Learning-rate schedules, shared by the device trainer and the Keras reference trainer.

Pure Python (no TensorFlow, no NumPy), so `tftl.runtime` can import it on a device and
`tftl.training` uses the very same schedule.
"""

import math


def default_warmup(total_steps):
    """Warm-up steps when none are given: min(50, total / 10), as the Keras reference."""
    return min(50, total_steps // 10)


def cosine_lr(base_lr, step, total_steps, warmup_steps=0):
    """Linear warm-up then cosine decay to 0 (as in the papers' fine-tuning recipes).

    Args:
        base_lr: peak learning rate, reached at the end of warm-up.
        step: 0-based global step.
        total_steps: steps of the whole run; at and after it the rate is 0.
        warmup_steps: steps of linear warm-up from base_lr / warmup_steps.
    """
    if warmup_steps and step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    t = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * base_lr * (1.0 + math.cos(math.pi * min(1.0, t)))

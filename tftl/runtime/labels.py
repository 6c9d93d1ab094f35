"""Which output row means which class: fixed at export, or given explicitly, never guessed.

A model exported with `--labels` has its classes fixed: a training folder must be named
after one of them. A model exported with `--classes N` has placeholder slots `class_0` ..
`class_{N-1}`. Filling those from the local folder names is only done when asked
(`fill_placeholders=True`, `tftl-train --fill-placeholders`), because two devices holding
different class subsets would give the same output row different meanings; a federated
or multi-device setup passes the same explicit list (`tftl-train --labels FILE`) everywhere.
"""

from tftl.runtime.errors import InputError


def placeholder(slot: int) -> str:
    return f"class_{slot}"


def is_placeholder(label, slot) -> bool:
    return label == placeholder(slot)


def read_labels_file(path) -> list:
    """Labels, one per line (UTF-8, a BOM and blank trailing lines ignored); InputError if unreadable."""
    try:
        with open(path, encoding="utf-8-sig") as f:
            lines = f.read().split("\n")
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"cannot read labels file {path} ({getattr(e, 'strerror', None) or e}) — "
                         "pass a UTF-8 text file with one label per line") from None
    labels = [line.rstrip("\r") for line in lines]
    while labels and not labels[-1].strip():
        labels.pop()
    return labels


def _apply_explicit(model_labels, explicit, where):
    if len(explicit) != len(model_labels):
        raise InputError(f"--labels gives {len(explicit)} labels but {where} has {len(model_labels)} outputs — "
                         "give one label per output, in output order")
    clash = [(i, m, e) for i, (m, e) in enumerate(zip(model_labels, explicit))
             if m != e and not is_placeholder(m, i)]
    if clash:
        i, m, e = clash[0]
        raise InputError(f"--labels names output {i} {e!r} but {where} fixed it as {m!r} at export — "
                         "keep the model's labels and name only its class_i slots")
    return list(explicit)


def _fill(labels, folders, where):
    new = [f for f in folders if f not in labels]
    free = [i for i, label in enumerate(labels) if is_placeholder(label, i) and label not in folders]
    if len(new) > len(free):
        if not free:
            raise InputError(f"folders {new} are not labels of {where} {labels} — rename the folders, or "
                             "re-export the model with --labels / --classes")
        raise InputError(f"{len(new)} new class folders but only {len(free)} free label slots in {where} — "
                         f"re-export it with --classes {len(folders)} (or more)")
    labels = list(labels)
    filled = {}
    for name, slot in zip(new, free):
        labels[slot] = filled[slot] = name
    return labels, filled


def resolve(model_labels, folders, *, explicit=None, fill_placeholders=False, where="the model"):
    """(labels, {slot: folder name filled}) for training `folders` on a model with `model_labels`.

    explicit: the full label list to use (placeholders may be named, fixed labels must match).
    fill_placeholders: give folders that are not labels the free `class_i` slots, in sorted
    order. Otherwise every folder must already be a label.

    Raises:
        InputError: one line saying how to fix the mismatch.
    """
    labels = list(model_labels)
    folders = sorted(folders)
    if len(folders) > len(labels):
        raise InputError(f"{len(folders)} class folders but {where} has {len(labels)} label slots — re-export "
                         f"it with --classes {len(folders)} (or more): python -m converters.export "
                         f"--classes {len(folders)} ...")
    if explicit is not None:
        labels = _apply_explicit(labels, list(explicit), where)
    unknown = [f for f in folders if f not in labels]
    if not unknown:
        return labels, {}
    if fill_placeholders:
        return _fill(labels, folders, where)
    free = [label for i, label in enumerate(labels) if is_placeholder(label, i)]
    fix = ("pass --labels FILE (the same list on every device) or --fill-placeholders to name its "
           f"{len(free)} unnamed slot(s) from these folders" if free else
           "rename the folders, or re-export the model with --labels")
    raise InputError(f"folders {unknown} are not labels of {where} {labels} — {fix}")

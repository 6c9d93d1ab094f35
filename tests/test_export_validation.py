"""The exporter refuses bad labels and unwritable outputs before any conversion starts."""

import os
import time

import pytest

from converters import export


def run(capsys, *args):
    t0 = time.time()
    rc = export.main(list(args))
    err = capsys.readouterr().err.strip()
    return rc, err, time.time() - t0


@pytest.mark.parametrize("text,needle", [
    ("daisy\nros\u2028es\n", "U+2028"), ("daisy\nro\x0bses\n", "\\x0b"), ("daisy\nro\x1cses\n", "\\x1c"),
    ("daisy\nroses/red\n", "'/'"), ("daisy\ndaisy\n", "twice"), ("daisy\n roses\n", "outer spaces"),
])
def test_bad_labels_are_refused_in_a_second(tmp_path, capsys, text, needle):
    labels = tmp_path / "labels.txt"
    labels.write_text(text, encoding="utf-8")
    rc, err, took = run(capsys, "--labels", str(labels), "--output", str(tmp_path / "m.tflite"))
    assert rc == 2 and needle in err and str(labels) in err and "\n" not in err, err
    assert took < 5 and not (tmp_path / "m.tflite").exists()


def test_bom_and_crlf_labels_are_read_clean(tmp_path):
    labels = tmp_path / "labels.txt"
    labels.write_bytes("\ufeffdaisy\r\nroses\r\n\r\n".encode("utf-8"))
    assert export.read_labels(str(labels)) == ["daisy", "roses"]


def test_unwritable_output_is_refused_before_conversion(tmp_path, capsys):
    rc, err, took = run(capsys, "--classes", "3", "--output", str(tmp_path / "missing" / "m.tflite"))
    assert rc == 2 and "does not exist" in err and took < 5
    rc, err, _ = run(capsys, "--classes", "3", "--output", str(tmp_path))
    assert rc == 2 and "is a folder" in err
    if os.geteuid() != 0:  # root writes anywhere
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o500)
        rc, err, _ = run(capsys, "--classes", "3", "--output", str(ro / "m.tflite"))
        assert rc == 2 and "not writable" in err

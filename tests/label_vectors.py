"""labels.txt texts that every reader must read alike, with Python's verdicts as the reference.

`contract.parse_labels` (Python) defines how labels.txt splits and which labels are valid
(`contract.LABEL_RULE`); the Java core (`ModelFile.parseLabels`) and the browser
(`modelfile.js parseLabels`) are tested against `cases()` (tests/test_android.py and
tests/test_web.py): the same labels, or a refusal, for every text. The texts cover what the
three readers used to disagree on: "\\r" and U+2028 inside a line, BOMs, blank lines,
lengths in code points (not UTF-16 units), Python's notion of whitespace (U+00A0, U+3000),
control characters, path characters and duplicates.
"""

from tftl.runtime import contract

TEXTS = [
    "daisy\nroses\n",
    "daisy\r\nroses\r\n",
    "\ufeffdaisy\nroses",
    "daisy\n\n  \nroses\n",
    "daisy\rroses\n",
    "daisy\u2028roses\n",
    "daisy\x1croses\n",
    "da\x00isy\n",
    "a/b\n",
    "a\\b\n",
    " daisy\n",
    "daisy\u00a0\n",
    "\u3000daisy\n",
    "dai\u00a0sy\n",
    "..\n",
    ".\n",
    "x" * 256 + "\n",
    "x" * 257 + "\n",
    "\U0001F33C" * 200 + "\n",
    "\U0001F33C" * 257 + "\n",
    "daisy\ndaisy\n",
    "Daisy\ndaisy\n",
    "straße\n日本\nçà\n",
    "a\ufeffb\n",
    "zero\u200bwidth\n",
    "tab\there\n",
    "\n\n",
    "",
]


def cases():
    """[{"text", "labels": [...] or None when Python refuses it}] for every text in TEXTS."""
    out = []
    for text in TEXTS:
        try:
            labels = contract.parse_labels(text)
        except contract.ContractError:
            labels = None
        out.append({"text": text, "labels": labels})
    return out

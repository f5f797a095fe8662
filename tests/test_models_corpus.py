"""The built-in corpus: extraction rules on a hand-made source tree, and the real halves.

Oracles: sentence lists written out by hand for the synthetic tree; set algebra and SHA-256
computed here for the halves.
"""

from __future__ import annotations

import hashlib
import textwrap
from pathlib import Path

import pytest

from gelu_quant.errors import DataError
from gelu_quant.models.corpus import (
    MAX_CHARS,
    MIN_CHARS,
    extract_sentences,
    package_sentences,
    sentence_split,
    stdlib_sentences,
    write_corpus,
)

MODULE = '''
"""Tools for widgets.

This module converts widgets into gadgets for the whole program.  It keeps
the original order of the widgets, e.g. Foo comes before Bar in the result.

>>> convert(1)
2

Example::

    an indented literal block that is never prose at all.

- A bulleted item that looks like a sentence too.
"""

class Widget:
    """A widget that can be turned into a gadget by the converter.

    Call frobnicate(x) to compute the value quickly for small widgets.
    See :func:`convert` for the conversion rules used by every widget here.
    """

    def method(self):
        """Return the number of gadgets this widget would make today!"""

if True:
    def conditional():
        """A function defined under an if statement is still documented here."""
'''

DUPLICATE = '''
def again():
    """This module converts widgets into gadgets for the whole program."""
'''


def _tree(root: Path) -> None:
    (root / "pkg").mkdir(parents=True)
    (root / "pkg" / "mod.py").write_text(textwrap.dedent(MODULE))
    (root / "pkg" / "dup.py").write_text(DUPLICATE)
    (root / "broken.py").write_text(
        '"""A file that does not parse is skipped entirely."""\ndef (:\n'
    )
    for skipped in ("test", "site-packages", "idlelib"):
        (root / skipped).mkdir()
        (root / skipped / "x.py").write_text(
            '"""Sentences in skipped folders never appear here."""'
        )
    (root / "test_thing.py").write_text(
        '"""Sentences in test modules never appear in the corpus."""'
    )


def test_extraction_rules_on_a_synthetic_tree(tmp_path: Path) -> None:
    _tree(tmp_path)
    expected = {
        "This module converts widgets into gadgets for the whole program.",
        "It keeps the original order of the widgets, e.g. Foo comes before Bar in the result.",
        "A widget that can be turned into a gadget by the converter.",
        "See convert for the conversion rules used by every widget here.",
        "Return the number of gadgets this widget would make today!",
        "A function defined under an if statement is still documented here.",
    }
    got = extract_sentences(tmp_path)
    assert set(got) == expected
    assert len(got) == len(expected)  # the duplicate in dup.py appears once
    order = [hashlib.sha256(s.encode()).digest()[1:9] for s in got]
    assert order == sorted(order)


def test_halves_are_disjoint_large_and_cover_all(
    corpus_calibration: list[str], corpus_evaluation: list[str]
) -> None:
    everything = stdlib_sentences("all")
    calibration, evaluation = set(corpus_calibration), set(corpus_evaluation)
    assert not calibration & evaluation
    assert calibration | evaluation == set(everything)
    assert len(everything) == len(set(everything))  # deduplicated
    assert len(calibration) >= 2000 and len(evaluation) >= 2000
    for text in corpus_calibration[:200]:
        expected = hashlib.sha256(text.encode()).digest()[0] % 2 == 0
        assert expected and sentence_split(text) == "calibration"
    for text in corpus_evaluation[:200]:
        assert hashlib.sha256(text.encode()).digest()[0] % 2 == 1


def test_sentences_are_clean(corpus_calibration: list[str]) -> None:
    for text in corpus_calibration:
        assert MIN_CHARS <= len(text) <= MAX_CHARS
        assert text == " ".join(text.split())
        assert ">>>" not in text and "`" not in text and "::" not in text
        assert text[0].isupper() and text[-1] in ".!?"


def test_limit_takes_a_stable_prefix(corpus_evaluation: list[str]) -> None:
    assert stdlib_sentences("evaluation", limit=25) == corpus_evaluation[:25]
    assert stdlib_sentences("evaluation", limit=0) == []
    with pytest.raises(DataError):
        stdlib_sentences("evaluation", limit=-1)


def test_unknown_split_is_a_data_error() -> None:
    with pytest.raises(DataError, match="calibration"):
        stdlib_sentences("train")  # type: ignore[arg-type]


def test_write_corpus_one_sentence_per_line(tmp_path: Path, corpus_calibration: list[str]) -> None:
    path = tmp_path / "corpus.txt"
    assert write_corpus(path, "calibration", limit=40) == 40
    assert path.read_text(encoding="utf-8").splitlines() == corpus_calibration[:40]
    assert [p.name for p in tmp_path.iterdir()] == ["corpus.txt"]  # no temp file left


def test_package_sentences_follow_the_same_rules_and_halves(tmp_path: Path) -> None:
    _tree(tmp_path)
    expected = set(extract_sentences(tmp_path))
    both = package_sentences("all", root=tmp_path)
    calibration = package_sentences("calibration", root=tmp_path)
    evaluation = package_sentences("evaluation", root=tmp_path)
    assert set(both) == expected and len(both) == len(expected)
    assert set(calibration) | set(evaluation) == expected
    for text in calibration:
        assert hashlib.sha256(text.encode()).digest()[0] % 2 == 0
    for text in evaluation:
        assert hashlib.sha256(text.encode()).digest()[0] % 2 == 1
    assert package_sentences("all", limit=2, root=tmp_path) == both[:2]


def test_package_calibration_half_never_holds_a_stdlib_evaluation_sentence(
    tmp_path: Path, corpus_evaluation: list[str]
) -> None:
    # a package whose docstrings quote standard-library evaluation sentences verbatim, beside
    # calibration ones: only the latter may reach the package corpus's calibration half
    quoted = corpus_evaluation[:20] + stdlib_sentences("calibration", 20)
    (tmp_path / "pkg").mkdir()
    body = "".join(f"def f{i}():\n    {s!r}\n\n" for i, s in enumerate(quoted))
    (tmp_path / "pkg" / "quotes.py").write_text(body, encoding="utf-8")
    calibration = package_sentences("calibration", root=tmp_path)
    assert set(calibration) == set(quoted[20:])
    assert not set(calibration) & set(corpus_evaluation)


def test_package_sentences_of_an_empty_folder_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no Python sources"):
        package_sentences("calibration", root=tmp_path)

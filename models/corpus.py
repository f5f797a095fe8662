"""Built-in English text corpora that exist on every machine: the standard library's docstrings,
and (more text, for distillation) the installed packages' docstrings (:func:`package_sentences`).

The source files under ``sysconfig.get_paths()["stdlib"]`` are parsed with :mod:`ast` (never
imported); the docstrings of modules, classes and functions are split into prose paragraphs (doctest
examples, literal blocks, option tables and other code-like lines are dropped), the paragraphs into
sentences, and the sentences are cleaned (reST roles and backquotes removed, whitespace collapsed),
filtered (length, share of letters, no code) and deduplicated.

Each sentence belongs to one of two disjoint halves, ``calibration`` or ``evaluation``, by a
stable hash of its text, and sentences are listed in the order of another stable hash: so the
halves, their order and every ``limit``-prefix are the same on every run and machine with the
same Python, and a sentence keeps its half across Python versions.

Parsing the whole standard library takes several seconds, so the sentence list is cached on disk
(``<gelu-quant cache>/corpus/``, keyed on the Python version and the files' sizes and times) and in
memory.
"""

from __future__ import annotations

import ast
import contextlib
import hashlib
import json
import os
import re
import sys
import sysconfig
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path
from typing import Literal

from gelu_quant.errors import DataError
from gelu_quant.fileio import write_text_atomic
from gelu_quant.models.cache import cache_root, settings_key

Split = Literal["calibration", "evaluation", "all"]
SPLITS: tuple[str, ...] = ("calibration", "evaluation", "all")

# Part of the disk-cache key: bump when the extraction or cleaning below changes.
CORPUS_FORMAT = 4
MIN_CHARS = 30
MAX_CHARS = 300
MIN_WORDS = 5
MIN_LETTER_SHARE = 0.75

# Folders of the standard library that hold no library prose worth having (tests, tools, the IDLE
# application, installed third-party packages, codec tables, generated help texts).
SKIP_DIRS = frozenset(
    {
        "test",
        "tests",
        "idle_test",
        "idlelib",
        "site-packages",
        "dist-packages",
        "lib2to3",
        "turtledemo",
        "__pycache__",
        "pydoc_data",
        "encodings",
        "ensurepip",
        "config-3",
    }
)

_ABBREVIATIONS = frozenset({"e.g.", "i.e.", "etc.", "vs.", "cf.", "no.", "mr.", "dr.", "approx."})
_ABBREVIATION = re.compile(r"\b(?:e\.g|i\.e|etc|vs|cf)\.", re.IGNORECASE)
_ROLE = re.compile(r":[a-zA-Z]+(?::[a-zA-Z]+)?:`~?([^`]*)`")
_BACKQUOTES = re.compile(r"`+([^`]*)`+")
_SENTENCE_END = re.compile(r"[.!?][\"')\]]?\s+(?=[A-Z\"'(])")
_CODE_HINTS = re.compile(
    r">>>|\.\.\.\s|==|!=|->|=>|::|\{|\}|\[\]|\(\)|\w\(|\w\[|__\w|\w_\w|\w\.\w|=\s*\w|\\|#|\$|@|\|"
)
_BULLET = re.compile(r"^\s*(?:[-*+•]|\d+[.)]|[a-z][.)])\s")


def stdlib_root() -> Path:
    """The folder of the running interpreter's standard library sources."""
    return Path(sysconfig.get_paths()["stdlib"])


def _source_files(root: Path) -> list[Path]:
    files: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS and not d.startswith("."))
        for name in sorted(filenames):
            if name.endswith(".py") and not name.startswith("test_"):
                files.append(Path(dirpath) / name)
    return files


def _docstrings(tree: ast.Module) -> Iterator[str]:
    todo: list[ast.AST] = [tree]
    while todo:
        node = todo.pop(0)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            doc = ast.get_docstring(node, clean=True)
            if doc:
                yield doc
        for child in ast.iter_child_nodes(node):
            if isinstance(
                child, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef | ast.If | ast.Try
            ):
                todo.append(child)


def _paragraphs(doc: str) -> Iterator[str]:
    """Prose paragraphs of a cleaned docstring: indented, doctest and list blocks dropped."""
    block: list[str] = []
    for line in [*doc.splitlines(), ""]:
        stripped = line.strip()
        is_code = (
            line[:1].isspace()
            or stripped.startswith((">>>", "...", "$ ", "%"))
            or bool(_BULLET.match(line))
        )
        if not stripped or is_code:
            if block:
                yield " ".join(block)
            block = []
            continue
        block.append(stripped)
    # A paragraph ending in "::" introduces a literal block: the indented lines were dropped above.


def _split_sentences(paragraph: str) -> Iterator[str]:
    start = 0
    for match in _SENTENCE_END.finditer(paragraph):
        end = match.start() + 1
        last_word = paragraph[start:end].rsplit(None, 1)[-1].lower().lstrip("(\"'[")
        if last_word in _ABBREVIATIONS or (len(last_word) == 2 and last_word[0].isalpha()):
            continue  # "e.g. Foo", or an initial such as "J. Smith"
        yield paragraph[start : match.end()].strip()
        start = match.end()
    tail = paragraph[start:].strip()
    if tail:
        yield tail


def _clean(sentence: str) -> str | None:
    text = _ROLE.sub(r"\1", sentence)
    text = _BACKQUOTES.sub(r"\1", text).replace("`", "'")  # old style: `name'
    text = " ".join(text.split())
    if not MIN_CHARS <= len(text) <= MAX_CHARS or len(text.split()) < MIN_WORDS:
        return None
    if not text[0].isupper() or text[-1] not in ".!?" or text.endswith("::"):
        return None
    if _CODE_HINTS.search(_ABBREVIATION.sub(" ", text)):
        return None
    visible = [c for c in text if not c.isspace()]
    letters = sum(c.isalpha() for c in visible)
    if letters < MIN_LETTER_SHARE * len(visible):
        return None
    return text


def extract_sentences(root: Path) -> list[str]:
    """All cleaned, deduplicated docstring sentences of the Python sources under ``root``.

    Files that do not parse are skipped. Sentences come in the order of their stable hash.
    """
    seen: set[str] = set()
    for path in _source_files(root):
        try:
            tree = ast.parse(path.read_bytes(), filename=str(path))
        except (SyntaxError, ValueError, OSError):
            continue
        for doc in _docstrings(tree):
            for paragraph in _paragraphs(doc):
                for raw in _split_sentences(paragraph):
                    sentence = _clean(raw)
                    if sentence is not None:
                        seen.add(sentence)
    return sorted(seen, key=_order_key)


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8")).digest()


def _order_key(text: str) -> tuple[bytes, str]:
    return _digest(text)[1:9], text


def sentence_split(text: str) -> Literal["calibration", "evaluation"]:
    """The half a sentence belongs to: decided by the first byte of its SHA-256, stable forever."""
    return "calibration" if _digest(text)[0] % 2 == 0 else "evaluation"


def _disk_key(root: Path, files: list[Path]) -> str:
    listing = []
    for path in files:
        st = path.stat()
        listing.append([str(path.relative_to(root)), st.st_size, st.st_mtime_ns])
    return settings_key(
        {
            "format": CORPUS_FORMAT,
            "python": sys.version,
            "root": str(root),
            "files": listing,
        }
    )


@lru_cache(maxsize=4)
def _all_sentences(root_text: str, corpus: str = "stdlib") -> tuple[str, ...]:
    root = Path(root_text)
    files = _source_files(root)
    if not files:
        what = (
            "the standard library sources are needed for the built-in corpus"
            if corpus == "stdlib"
            else "no installed package has Python sources there"
        )
        raise DataError(
            f"no Python sources found under {root}: {what}; pass your own text file with --data "
            "instead"
        )
    cache_file = cache_root() / "corpus" / f"{corpus}-{_disk_key(root, files)}.json"
    try:
        cached = json.loads(cache_file.read_text(encoding="utf-8"))
        if isinstance(cached, list) and all(isinstance(s, str) for s in cached):
            return tuple(cached)
    except (OSError, ValueError):
        pass
    sentences = extract_sentences(root)
    with contextlib.suppress(OSError):  # a read-only cache only costs time
        write_text_atomic(
            cache_file, json.dumps(sentences, ensure_ascii=False) + "\n", make_parents=True
        )
    return tuple(sentences)


def _check(split: str, limit: int | None) -> None:
    if split not in SPLITS:
        raise DataError(f"unknown corpus split {split!r}: choose one of {', '.join(SPLITS)}")
    if limit is not None and limit < 0:
        raise DataError(f"limit must be >= 0, got {limit}")


def stdlib_sentences(split: Split = "all", limit: int | None = None) -> list[str]:
    """Sentences from the standard library's docstrings: one half of them, or all.

    ``split`` is ``"calibration"``, ``"evaluation"`` (disjoint halves) or ``"all"``; ``limit``
    keeps the first ``limit`` sentences of the stable order (``None``: all of them).
    """
    _check(split, limit)
    sentences = _split_sentences_of(str(stdlib_root()), split, "stdlib")
    return list(sentences[:limit] if limit is not None else sentences)


def packages_root() -> Path:
    """The folder the running interpreter installs pure-Python packages into (site-packages)."""
    return Path(sysconfig.get_paths()["purelib"])


def package_sentences(
    split: Split = "all", limit: int | None = None, root: Path | str | None = None
) -> list[str]:
    """Sentences from the docstrings of the installed third-party packages (``root``, default
    :func:`packages_root`), extracted and cleaned exactly as :func:`stdlib_sentences`.

    About nine times as much text as the standard library in the locked environment (numpy,
    torch, transformers, onnx, ...), for work that needs more unlabeled text than the standard
    library holds, such as distillation. The halves are decided by the same hash of each
    sentence's text (:func:`sentence_split`), so this corpus's ``calibration`` half never holds a
    sentence of the standard library's ``evaluation`` half: training on one and evaluating on the
    other stays disjoint. The text depends on what is installed; with the lock it is the same on
    every machine. The first call parses every package (about two minutes), later calls read the
    disk cache.
    """
    _check(split, limit)
    where = packages_root() if root is None else Path(root)
    sentences = _split_sentences_of(str(where), split, "packages")
    return list(sentences[:limit] if limit is not None else sentences)


@lru_cache(maxsize=6)
def _split_sentences_of(root_text: str, split: str, corpus: str) -> tuple[str, ...]:
    sentences = _all_sentences(root_text, corpus)
    if split == "all":
        return sentences
    return tuple(s for s in sentences if sentence_split(s) == split)


def write_corpus(path: Path | str, split: Split = "all", limit: int | None = None) -> int:
    """Write the sentences of ``split`` to ``path``, one per line (UTF-8); returns how many.

    The file is written atomically; an existing file at ``path`` is replaced.
    """
    sentences = stdlib_sentences(split, limit)
    write_text_atomic(Path(path), "".join(s + "\n" for s in sentences), make_parents=True)
    return len(sentences)

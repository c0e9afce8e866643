"""Word-level text corpora for language modelling: PTB-style folders and plain-text files.

A corpus is read line by line; every line is split on whitespace and ends with ``<eos>``. The
vocabulary comes from the training split only, in order of first appearance (``<unk>`` and
``<eos>`` are always in it); words of the validation and test splits that it lacks become
``<unk>``, with one warning that counts them. Two layouts:

- a **PTB-style folder** with ``train.txt``, ``valid.txt`` and ``test.txt`` (Mikolov's
  pre-processed Penn Treebank, or any corpus laid out the same way);
- a **single plain-text file**, split by lines into contiguous train / valid / test parts.

Token ids are numpy ``int64`` arrays, so a :class:`Corpus` is cheap to ship to worker processes.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from autoshrink.atomic_write import write_text_atomic
from autoshrink.errors import DataError
from autoshrink.user_files import read_text_file, require_folder

log = logging.getLogger(__name__)

EOS = "<eos>"
UNK = "<unk>"
SPLITS = ("train", "valid", "test")


@dataclass(frozen=True)
class Vocabulary:
    """Words in id order; ``index`` maps a word to its id."""

    words: tuple[str, ...]

    @cached_property
    def index(self) -> Mapping[str, int]:
        """Word -> id."""
        return {w: i for i, w in enumerate(self.words)}

    def __len__(self) -> int:
        return len(self.words)

    def save(self, path: str | Path) -> None:
        """Write the words one per line, in id order (line ``i`` is word ``i``)."""
        write_text_atomic(path, "".join(f"{w}\n" for w in self.words))

    @classmethod
    def load(cls, path: str | Path) -> Vocabulary:
        """Read a file :meth:`save` wrote; one that is empty, repeats a word or has a line of
        other than one word is a :class:`DataError` naming it."""
        lines = read_text_file(path, DataError, "vocabulary").splitlines()
        for number, line in enumerate(lines, 1):
            if len(line.split()) != 1 or line.strip() != line:
                raise DataError(f"{path}:{number}: expected one word per line, got {line!r}")
        if len(set(lines)) != len(lines) or not lines:
            what = "no word" if not lines else "a word twice"
            raise DataError(f"{path}: {what}; expected each word of the vocabulary once")
        return cls(tuple(lines))

    @classmethod
    def from_lines(cls, lines: Sequence[Sequence[str]]) -> Vocabulary:
        """The words of ``lines`` in order of first appearance, then ``<eos>`` and ``<unk>``."""
        seen: dict[str, None] = {}
        for line in lines:
            for w in line:
                seen.setdefault(w, None)
        seen.setdefault(EOS, None)
        seen.setdefault(UNK, None)
        return cls(tuple(seen))


@dataclass(frozen=True)
class Corpus:
    """A tokenised corpus: the vocabulary and each split's token ids (``<eos>`` included).

    ``unknown`` counts, per split, the tokens that were mapped to ``<unk>`` because the
    training vocabulary lacks them (always 0 for ``train``). ``test`` is ``None`` when the
    corpus was loaded without its test split (a search never scores on it).
    """

    name: str
    vocab: Vocabulary
    train: np.ndarray  # [N_train] int64
    valid: np.ndarray  # [N_valid] int64
    test: np.ndarray | None  # [N_test] int64
    unknown: Mapping[str, int]

    @property
    def ntokens(self) -> int:
        """Vocabulary size."""
        return len(self.vocab)

    def sha256(self) -> str:
        """A hex digest of the vocabulary in id order and of each split's token ids: equal for
        the same text wherever it lies, other for text whose words or ids differ (the same
        words in another first-appearance order give other ids)."""
        digest = hashlib.sha256("\n".join(self.vocab.words).encode())
        for ids in (self.train, self.valid, self.test):
            tokens = np.zeros(0, "<i8") if ids is None else np.ascontiguousarray(ids, "<i8")
            digest.update(f"\n{len(tokens)}:".encode() + tokens.tobytes())
        return digest.hexdigest()


def read_lines(path: Path) -> list[list[str]]:
    """The whitespace-split, non-empty lines of ``path``: lines end at line feeds, carriage
    returns or both only, as reading the file line by line splits them; a form feed or U+2028
    inside a line is whitespace (``str.splitlines`` ended lines there too). A byte order mark
    at the start (a file saved as "UTF-8 with BOM") is not text."""
    text = read_text_file(path, DataError, "text").removeprefix("\ufeff")
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return [words for raw in text.split("\n") if (words := raw.split())]


def encode(
    lines: Sequence[Sequence[str]], vocab: Vocabulary, source: str
) -> tuple[np.ndarray, int]:
    """Token ids of ``lines`` with ``<eos>`` after each line, and how many became ``<unk>``."""
    index = vocab.index
    unk, eos = index[UNK], index[EOS]
    ids: list[int] = []
    missing: dict[str, int] = {}
    for line in lines:
        for w in line:
            i = index.get(w)
            if i is None:
                missing[w] = missing.get(w, 0) + 1
                i = unk
            ids.append(i)
        ids.append(eos)
    n_unknown = sum(missing.values())
    if n_unknown:
        log.warning(
            "%s: %d tokens (%d distinct words) are not in the training vocabulary; mapped to %s",
            source,
            n_unknown,
            len(missing),
            UNK,
        )
    return np.asarray(ids, dtype=np.int64), n_unknown


def build_corpus(name: str, parts: Mapping[str, Sequence[Sequence[str]]]) -> Corpus:
    """A corpus from tokenised ``train``/``valid`` (and ``test``, where ``parts`` has it)
    lines; empty splits are an error."""
    splits = [s for s in SPLITS if s in parts]
    for split in splits:
        require_words(parts[split], name, split)
    vocab = Vocabulary.from_lines(parts["train"])
    ids, unknown = {}, {}
    for split in splits:
        ids[split], unknown[split] = encode(parts[split], vocab, f"{name} {split}")
    return Corpus(name, vocab, ids["train"], ids["valid"], ids.get("test"), unknown)


def require_words(lines: Sequence[Sequence[str]], where: str | Path, split: str) -> None:
    """A :class:`DataError` naming ``where`` (the file, or the corpus) if ``split`` has no
    words."""
    if not lines:
        raise DataError(f"{where}: the {split} split has no words; expected non-empty text")


def folder_parts(root: str | Path, splits: Sequence[str] = SPLITS) -> dict[str, list[list[str]]]:
    """The tokenised lines of a PTB-style folder's ``splits`` (``train.txt``, ``valid.txt``,
    ``test.txt``); a file without words is a :class:`DataError` naming it."""
    root = Path(root)
    files = [f"{s}.txt" for s in splits]
    require_folder(root, DataError, f"a folder of {', '.join(files)}")
    missing = [f for f in files if not (root / f).exists()]  # a folder there: read_lines says
    if missing:
        raise DataError(f"{root}: missing {', '.join(missing)}; expected a PTB-style folder")
    parts = {s: read_lines(root / f"{s}.txt") for s in splits}
    for split, lines in parts.items():
        require_words(lines, root / f"{split}.txt", split)  # the file, not only the folder
    return parts


def file_parts(
    path: str | Path, *, valid_fraction: float = 0.1, test_fraction: float = 0.1
) -> dict[str, list[list[str]]]:
    """A plain-text file split by lines: the first lines train, then valid, then test."""
    path = Path(path)
    fractions_ok = min(valid_fraction, test_fraction) > 0 and valid_fraction + test_fraction < 1
    if not fractions_ok:
        raise DataError(
            f"{path}: valid and test fractions must be in (0, 1) with a sum below 1, "
            f"got {valid_fraction} and {test_fraction}"
        )
    lines = read_lines(path)
    n = len(lines)
    n_valid, n_test = round(n * valid_fraction), round(n * test_fraction)
    n_train = n - n_valid - n_test
    if n_train < 1 or n_valid < 1 or n_test < 1:
        raise DataError(
            f"{path}: {n} non-empty lines are too few to split into train, valid and test"
        )
    return {
        "train": lines[:n_train],
        "valid": lines[n_train : n_train + n_valid],
        "test": lines[n_train + n_valid :],
    }


def load_text(
    path: str | Path | None,
    *,
    train_lines: int | None = None,
    valid_lines: int | None = None,
    test_lines: int | None = None,
    valid_fraction: float = 0.1,
    test_fraction: float = 0.1,
    with_test: bool = True,
) -> Corpus:
    """A PTB-style folder, or a plain-text file split by lines into train / valid / test.

    The line limits keep only the first lines of each split (the AutoShrink proxy takes
    4,000 / 300 / 300 from PTB); the vocabulary is built from the kept training lines.
    ``valid_fraction`` and ``test_fraction`` only apply to a single file (whose test part is
    split off either way). Without ``with_test`` the test split is neither read nor encoded
    (a folder then needs no ``test.txt``) and the corpus's ``test`` is ``None``.
    """
    if path is None:
        raise DataError(
            "no text data given; expected --data DIR, a folder with train.txt, valid.txt, test.txt"
        )
    p = Path(path)
    if p.is_file():
        parts = file_parts(p, valid_fraction=valid_fraction, test_fraction=test_fraction)
    else:
        parts = folder_parts(p, SPLITS if with_test else SPLITS[:2])
    if not with_test:
        parts.pop("test", None)
    limits = {"train": train_lines, "valid": valid_lines, "test": test_lines}
    for split, limit in limits.items():
        if limit is not None and split in parts:
            if limit < 1:
                raise DataError(f"{p}: the {split} line limit must be >= 1, got {limit}")
            parts[split] = parts[split][:limit]
    return build_corpus(str(p), parts)


def batchify(ids: np.ndarray, batch_size: int, what: str = "the text") -> np.ndarray:
    """Cut a token stream into ``batch_size`` parallel streams: ``[T, batch_size]``.

    The tail that does not fill a whole column is dropped, as in the standard PTB recipe. Too
    few tokens is a :class:`DataError` that names ``what`` the stream is.
    """
    if batch_size < 1:
        raise DataError(f"batch size must be >= 1, got {batch_size}")
    t = len(ids) // batch_size
    if t < 2:
        raise DataError(
            f"{what}: {len(ids)} tokens are too few for batch size {batch_size}; "
            "expected at least 2 tokens per stream"
        )
    return ids[: t * batch_size].reshape(batch_size, t).T.copy()

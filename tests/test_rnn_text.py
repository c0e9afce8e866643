"""Text corpora for language modelling: PTB-style folders, single files, vocabulary, bad input."""

from __future__ import annotations

import logging
import random
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from autoshrink.data.text import (
    EOS,
    UNK,
    Vocabulary,
    batchify,
    file_parts,
    load_text,
    read_lines,
)
from autoshrink.errors import DataError

SUBJECTS = ("the cat", "the dog", "a bird")
VERBS = ("sees", "likes", "chases")
OBJECTS = ("the mat", "a ball", "the tree")


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny matrices: one thread is faster, and immune to a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_lines(n: int, seed: int) -> list[str]:
    """Sentences of a tiny grammar (12 words): easy to learn far below uniform perplexity."""
    rng = random.Random(seed)
    return [f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)} ." for _ in range(n)]


def write_tiny_corpus(root: Path, n_train: int = 400, n_eval: int = 60) -> Path:
    """A PTB-style folder of the tiny grammar; the test split has one unseen word."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "train.txt").write_text("\n".join(tiny_lines(n_train, 0)) + "\n")
    (root / "valid.txt").write_text("\n".join(tiny_lines(n_eval, 1)) + "\n")
    (root / "test.txt").write_text("\n".join([*tiny_lines(n_eval - 1, 2), "the cow sees"]) + "\n")
    return root


def test_ptb_folder_tokens_eos_and_unknown_words(tmp_path: Path, caplog) -> None:
    root = tmp_path / "c"
    root.mkdir()
    (root / "train.txt").write_text(" a b <unk> \n\n b c\n")
    (root / "valid.txt").write_text("a z z\n")
    (root / "test.txt").write_text("c b\n")
    with caplog.at_level(logging.WARNING):
        corpus = load_text(root)
    words = corpus.vocab.words
    # vocabulary from train only, in order of first appearance, then <eos>; <unk> was seen
    assert words == ("a", "b", UNK, "c", EOS)
    ids = corpus.vocab.index
    assert corpus.train.tolist() == [ids[w] for w in ("a", "b", UNK, EOS, "b", "c", EOS)]
    assert corpus.valid.tolist() == [ids["a"], ids[UNK], ids[UNK], ids[EOS]]
    assert corpus.unknown == {"train": 0, "valid": 2, "test": 0}
    assert "2 tokens (1 distinct words)" in caplog.text
    assert corpus.train.dtype == np.int64


def test_a_vocabulary_round_trips_through_its_file(tmp_path: Path) -> None:
    vocab = load_text(write_tiny_corpus(tmp_path / "c")).vocab
    vocab.save(tmp_path / "vocab.txt")
    assert (tmp_path / "vocab.txt").read_text().splitlines() == list(vocab.words)
    assert Vocabulary.load(tmp_path / "vocab.txt") == vocab


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("", "no word; expected each word of the vocabulary once"),
        ("a\nb\na\n", "a word twice; expected each word of the vocabulary once"),
        ("a\nb c\n", ":2: expected one word per line, got 'b c'"),
        ("a\n\nb\n", ":2: expected one word per line, got ''"),
        ("a \n", ":1: expected one word per line, got 'a '"),
    ],
)
def test_a_bad_vocabulary_file_is_one_line_naming_it(tmp_path: Path, text: str, says: str) -> None:
    path = tmp_path / "vocab.txt"
    path.write_text(text)
    with pytest.raises(DataError, match=re.escape(f"{path}{says}" if says[0] == ":" else says)):
        Vocabulary.load(path)


def test_unk_and_eos_are_always_in_the_vocabulary(tmp_path: Path) -> None:
    corpus = load_text(write_tiny_corpus(tmp_path / "c"))
    assert UNK in corpus.vocab.index and EOS in corpus.vocab.index
    assert corpus.ntokens == 12 + 2  # 12 words of the grammar (with ".") + <eos> + <unk>
    assert corpus.unknown["test"] == 1  # "cow"


def test_line_limits_keep_the_first_lines_and_the_vocabulary_follows(tmp_path: Path) -> None:
    root = tmp_path / "c"
    root.mkdir()
    (root / "train.txt").write_text("a b\nc d\n")
    (root / "valid.txt").write_text("a\nb\nc\n")
    (root / "test.txt").write_text("d\n")
    corpus = load_text(root, train_lines=1, valid_lines=2)
    assert corpus.vocab.words == ("a", "b", EOS, UNK)
    assert len(corpus.valid) == 4  # "a <eos> b <eos>"
    assert corpus.unknown["test"] == 1


def test_lines_end_at_line_breaks_only(tmp_path: Path) -> None:
    # str.splitlines also ended a line at a form feed, \x1c-\x1e, U+0085, U+2028 and U+2029
    path = tmp_path / "corpus.txt"
    path.write_text("the cat\x0csat\x1eon\r\nthe\u2028mat\rthe dog\u0085ran\n", newline="")
    assert read_lines(path) == [
        ["the", "cat", "sat", "on"], ["the", "mat"], ["the", "dog", "ran"]
    ]  # fmt: skip


def test_a_byte_order_mark_is_not_part_of_the_first_word(tmp_path: Path) -> None:
    # a file saved "UTF-8 with BOM" (Windows Notepad): the first word was "\ufeffthe", a word
    # of its own in the vocabulary, and the first word of valid/test an unknown one
    root = tmp_path / "c"
    root.mkdir()
    for name in ("train.txt", "valid.txt", "test.txt"):
        (root / name).write_text("the cat\nthe dog\n", encoding="utf-8-sig")
    assert read_lines(root / "train.txt") == [["the", "cat"], ["the", "dog"]]
    corpus = load_text(root)
    assert corpus.vocab.words == ("the", "cat", "dog", "<eos>", "<unk>")
    assert corpus.unknown == {"train": 0, "valid": 0, "test": 0}


def test_single_file_is_split_by_lines(tmp_path: Path) -> None:
    path = tmp_path / "corpus.txt"
    path.write_text("\n".join(f"w{i} x" for i in range(20)) + "\n")
    corpus = load_text(path)
    # 20 lines: 16 train, 2 valid, 2 test, contiguous; each line has 2 words + <eos>
    assert (len(corpus.train), len(corpus.valid), len(corpus.test)) == (48, 6, 6)
    assert corpus.unknown == {"train": 0, "valid": 2, "test": 2}  # w16..w19 unseen


def test_without_the_test_split_a_folder_needs_no_test_txt(tmp_path: Path) -> None:
    root = write_tiny_corpus(tmp_path / "c")
    whole = load_text(root)
    (root / "test.txt").unlink()
    part = load_text(root, with_test=False)
    assert part.test is None and "test" not in part.unknown
    assert part.vocab == whole.vocab and np.array_equal(part.valid, whole.valid)
    with pytest.raises(DataError, match="missing test.txt"):
        load_text(root)
    single = tmp_path / "corpus.txt"
    single.write_text("\n".join(f"w{i} x" for i in range(20)) + "\n")
    cut = load_text(single, with_test=False)  # the test lines are still split off
    assert (len(cut.train), len(cut.valid), cut.test) == (48, 6, None)


def test_the_ptb_proxy_split(shared_data: Path) -> None:
    corpus = load_text(shared_data / "ptb" / "proxy")
    # The first 4,000 lines of PTB train: 84,832 words + 4,000 <eos>
    assert len(corpus.train) == 84_832 + 4_000
    assert corpus.unknown["train"] == 0 and corpus.unknown["valid"] > 0


@pytest.mark.parametrize(
    ("setup", "match"),
    [
        (lambda root: None, "no such folder"),
        (lambda root: root.mkdir(), "missing train.txt, valid.txt, test.txt"),
        (
            lambda root: (root.mkdir(), (root / "train.txt").write_text("a\n")),
            "missing valid.txt, test.txt",
        ),
        (  # a folder in a split's place: said so, not "missing"
            lambda root: (
                root.mkdir(),
                (root / "train.txt").write_text("a\n"),
                (root / "valid.txt").write_text("a\n"),
                (root / "test.txt").mkdir(),
            ),
            "test.txt: a folder, not a file",
        ),
        (
            lambda root: (
                root.mkdir(),
                (root / "train.txt").write_text("\n  \n"),
                (root / "valid.txt").write_text("a\n"),
                (root / "test.txt").write_text("a\n"),
            ),
            r"data/train\.txt: the train split has no words",  # the file, not just the folder
        ),
        (
            lambda root: (
                root.mkdir(),
                (root / "train.txt").write_text("a\n"),
                (root / "valid.txt").write_text(""),
                (root / "test.txt").write_text("a\n"),
            ),
            r"data/valid\.txt: the valid split has no words",
        ),
        (
            lambda root: (
                root.mkdir(),
                (root / "train.txt").write_bytes(b"\xff\xfe\x00a"),
                (root / "valid.txt").write_text("a\n"),
                (root / "test.txt").write_text("a\n"),
            ),
            "not UTF-8",
        ),
    ],
)
def test_bad_folders_raise_one_line_errors(tmp_path: Path, setup, match: str) -> None:
    root = tmp_path / "data"
    setup(root)
    with pytest.raises(DataError, match=match) as err:
        load_text(root)
    assert "\n" not in str(err.value)


def test_bad_files_and_settings(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no text data given"):
        load_text(None)
    short = tmp_path / "short.txt"
    short.write_text("a b\nc\n")
    with pytest.raises(DataError, match="too few to split"):
        load_text(short)
    with pytest.raises(DataError, match="line limit must be >= 1"):
        load_text(write_tiny_corpus(tmp_path / "c"), train_lines=0)


def test_batchify_makes_parallel_streams() -> None:
    ids = np.arange(11)
    out = batchify(ids, 3)  # 3 streams of 3 tokens; the last 2 tokens are dropped
    assert out.tolist() == [[0, 3, 6], [1, 4, 7], [2, 5, 8]]
    with pytest.raises(DataError, match="too few"):
        batchify(ids, 6)
    assert batchify(np.arange(4), 1).tolist() == [[0], [1], [2], [3]]  # the smallest batch
    assert batchify(np.arange(4), 2).tolist() == [[0, 2], [1, 3]]  # 2 tokens: the shortest
    with pytest.raises(DataError, match="batch size must be >= 1, got 0"):
        batchify(ids, 0)


def test_a_file_splits_down_to_one_line_per_part_and_fractions_are_checked(tmp_path) -> None:
    ten = tmp_path / "ten.txt"
    ten.write_text("".join(f"w{i}\n" for i in range(10)))
    parts = file_parts(ten)  # 10% of 10 lines: one valid line, one test line
    assert [len(parts[k]) for k in ("train", "valid", "test")] == [8, 1, 1]
    assert parts["test"] == [["w9"]]
    for fractions in ((0.5, 0.5), (0.6, 0.6), (0.0, 0.2), (0.2, 1.0)):
        with pytest.raises(DataError, match=r"fractions must be in \(0, 1\) with a sum below 1"):
            file_parts(ten, valid_fraction=fractions[0], test_fraction=fractions[1])


def test_a_split_too_small_for_its_batch_is_named(cli, tmp_path: Path) -> None:
    root = write_tiny_corpus(tmp_path / "c", n_train=60, n_eval=20)
    (root / "valid.txt").write_text("a b c\n")  # 4 tokens with <eos>
    cell = Path(__file__).resolve().parents[1] / "src" / "autoshrink" / "cells" / "shrinkrnn.json"
    code, _, err = cli("train", cell, "--task", "rnn", "--data", root, "--nhid", "8",
                       "--eval-batch-size", "10", "--out", tmp_path / "o")  # fmt: skip
    assert code == 2 and err.count("\n") == 1, err
    assert f"{root}: the valid split (--eval-batch-size): 4 tokens are too few for batch " in err

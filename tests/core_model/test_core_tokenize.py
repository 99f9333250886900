"""Tokenisation helpers: WordPiece vocab built from texts, reload, padding modes, offline errors."""

from __future__ import annotations

import pytest
from cxrvlp.core.errors import ConfigError
from cxrvlp.core.text.tokenize import SPECIAL_TOKENS, build_tokenizer_from_texts, load_tokenizer, tokenize

TEXTS = [
    "There is a small left pleural effusion.",
    "No acute cardiopulmonary abnormality.",
    "Mild cardiomegaly. Bilateral pleural effusions.",
    "Right lower lobe consolidation concerning for pneumonia.",
] * 10


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("tok")
    build_tokenizer_from_texts(TEXTS, d, vocab_size=120)
    return d


def test_vocab_has_specials_first_and_reloads(tok_dir):
    vocab = (tok_dir / "vocab.txt").read_text().split("\n")
    assert vocab[: len(SPECIAL_TOKENS)] == list(SPECIAL_TOKENS)
    assert 20 < len([v for v in vocab if v]) <= 120
    tok = load_tokenizer(tok_dir)
    assert tok.convert_tokens_to_ids(["[PAD]", "[CLS]", "[SEP]"]) == [0, 2, 3]
    # frequent words become whole tokens; nothing in the training text maps to [UNK]
    assert "effusion" in tok.tokenize("pleural effusion")
    assert tok.unk_token_id not in tok("mild cardiomegaly concerning for pneumonia")["input_ids"]


def test_lowercase_flag(tmp_path):
    tok = build_tokenizer_from_texts(TEXTS, tmp_path / "cased", vocab_size=150, lowercase=False)
    assert tok.tokenize("There")[0].startswith("T")
    low = load_tokenizer(tmp_path / "cased")
    assert low.tokenize("There") == tok.tokenize("There")


def test_tokenize_padding_modes(tok_dir):
    tok = load_tokenizer(tok_dir)
    texts = ["no effusion", "there is a small left pleural effusion"]
    fixed = tokenize(tok, texts, max_length=16)
    assert fixed["input_ids"].shape == (2, 16)
    longest = tokenize(tok, texts, max_length=16, padding="longest")
    n = int(longest["attention_mask"].sum(1).max())
    assert longest["input_ids"].shape == (2, n) and n < 16
    assert (longest["input_ids"] == fixed["input_ids"][:, :n]).all()
    assert (fixed["input_ids"][:, 0] == tok.cls_token_id).all()
    sep_pos = fixed["attention_mask"].sum(1) - 1
    assert (fixed["input_ids"].gather(1, sep_pos[:, None]) == tok.sep_token_id).all()
    trunc = tokenize(tok, texts, max_length=4)
    assert trunc["input_ids"].shape == (2, 4) and trunc["input_ids"][1, -1] == tok.sep_token_id
    with pytest.raises(ConfigError):
        tokenize(tok, texts, max_length=8, padding="do_not_pad")


def test_bare_vocab_folder_and_file(tok_dir, tmp_path):
    (tmp_path / "vocab.txt").write_text((tok_dir / "vocab.txt").read_text())
    a = load_tokenizer(tmp_path)
    b = load_tokenizer(tmp_path / "vocab.txt")
    ref = load_tokenizer(tok_dir)
    s = "bilateral pleural effusions"
    assert a(s)["input_ids"] == b(s)["input_ids"] == ref(s)["input_ids"]


def test_missing_tokenizer_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ConfigError, match="no tokenizer_config.json"):
        load_tokenizer(tmp_path)
    with pytest.raises(ConfigError, match="not-a-real/model-xyz"):
        load_tokenizer("not-a-real/model-xyz")
    with pytest.raises(ConfigError):
        build_tokenizer_from_texts([], tmp_path / "x")



def test_built_run_vocab_is_removed_at_exit(tmp_path):
    """The vocab built for a run lives in a temp folder until its process exits (40 such folders had
    piled up in /tmp from test runs); the tokenizer saves and reloads while the process runs."""
    import subprocess
    import sys

    code = f"""
import tempfile
from types import SimpleNamespace
tempfile.tempdir = {str(tmp_path / "tmp")!r}
from cxrvlp.core.text.run_tokenizer import build_run_tokenizer
state = SimpleNamespace(is_main_process=True, num_processes=1)
tok, fresh = build_run_tokenizer(lambda: {TEXTS!r}, {str(tmp_path / "run")!r}, 120, resume=False, state=state)
assert fresh
tok.save_pretrained({str(tmp_path / "saved")!r})
import pathlib
print(sorted(p.name for p in pathlib.Path(tempfile.tempdir).iterdir() if "tokenizer" in p.name))
"""
    (tmp_path / "tmp").mkdir()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().startswith("['tokenizer-")  # alive while the process runs
    assert "effusion" in load_tokenizer(tmp_path / "saved").tokenize("pleural effusion")
    assert [p.name for p in (tmp_path / "tmp").iterdir() if "tokenizer" in p.name] == []


def test_built_vocab_is_the_same_in_every_process(tmp_path):
    """Two processes with different hash seeds build the same vocab from the same texts (the `tokenizers`
    WordPiece trainer did not: two identical demo runs trained different CARZero models)."""
    import os
    import subprocess
    import sys

    texts = TEXTS + ["Nodule in the right upper lobe.", "Tiny nodular opacity; no pneumothorax."] * 3
    code = "import sys; from cxrvlp.core.text.tokenize import build_tokenizer_from_texts as b; " \
        f"b({texts!r}, sys.argv[1], vocab_size=55)"  # fmt: skip
    vocabs = []
    for seed in ("1", "2"):
        out = tmp_path / f"v{seed}"
        env = {**os.environ, "PYTHONHASHSEED": seed}
        subprocess.run([sys.executable, "-c", code, str(out)], check=True, env=env)
        vocabs.append((out / "vocab.txt").read_text())
    assert vocabs[0] == vocabs[1]
    vocab = vocabs[0].split()
    assert len(vocab) == 55 and vocab[:5] == list(SPECIAL_TOKENS)
    # every character covered; the most frequent word whole (20x), the rarest cut by the budget (3x)
    assert {"##x", "##y", ";"} <= set(vocab) and "pleural" in vocab and "upper" not in vocab


def test_words_beyond_the_budget_fall_back_to_pieces(tmp_path):
    tok = build_tokenizer_from_texts(TEXTS + ["zygomatic"], tmp_path / "small", vocab_size=60)
    pieces = tok.tokenize("zygomatic effusion")
    assert tok.unk_token_id not in tok.convert_tokens_to_ids(pieces)
    assert pieces[0] == "z" and all(p.startswith("##") for p in pieces[1:-1] if p != "effusion")

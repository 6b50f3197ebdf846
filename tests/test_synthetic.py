"""The generated default corpus: deterministic, cached, valid shards and tokenizer."""

from __future__ import annotations

import hashlib
import json
import random
import re

import numpy as np
import pytest
import sentencepiece as spm

from golf_jax.data.shards import load_tokens, read_shard, shard_files
from golf_jax.data.synthetic import PARAMS, Doc, corpus_key, ensure_default_corpus
from golf_jax.data.tokenizer import load_tokenizer


def _digests(d):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(d.iterdir()) if p.suffix in (".bin", ".model")}


@pytest.fixture(scope="module")
def corpus_root(tmp_path_factory):
    return tmp_path_factory.mktemp("corpus")


def test_build_is_deterministic_valid_and_cached(corpus_root, tmp_path, capsys):
    a = ensure_default_corpus(corpus_root)
    b = ensure_default_corpus(tmp_path / "b")
    assert a.data_dir.name == b.data_dir.name == corpus_key()
    assert a.vocab_size == 1024  # the grammar's text supports the full vocab
    da, db = _digests(a.data_dir), _digests(b.data_dir)
    assert da == db and len(da) == 5  # tokenizer + 1 val + 3 train shards
    assert [p.name for p in corpus_root.iterdir()] == [corpus_key()]  # no temp dirs

    sp = load_tokenizer(a.tokenizer_path, a.vocab_size)
    assert (sp.pad_id(), sp.bos_id(), sp.eos_id(), sp.unk_id()) == (0, 1, 2, 3)
    assert sp.is_byte(4) and sp.id_to_piece(4) == "<0x00>"
    manifest = json.loads((a.data_dir / "manifest.json").read_text())
    assert manifest["tokenizer"]["vocab_size"] == 1024
    for split in ("train", "val"):
        files = shard_files(a.train_pattern if split == "train" else a.val_pattern)
        info = manifest["splits"][split]
        assert [f.name for f in files] == [s["name"] for s in info["shards"]]
        toks = np.concatenate([read_shard(f, vocab_size=a.vocab_size) for f in files])
        assert toks.size == info["tokens"] == PARAMS[f"{split}_tokens"]
        assert toks[0] == 1 and int((toks == 1).sum()) == info["docs"]  # one BOS per doc
        assert not (toks == 2).any()  # no EOS
    assert [s["tokens"] for s in manifest["splits"]["train"]["shards"]] == [1_000_000] * 3

    capsys.readouterr()
    again = ensure_default_corpus(corpus_root)  # complete: reused, not rebuilt
    assert again == a and "building" not in capsys.readouterr().out


def test_text_structure():
    tenses = set()
    for seed in range(40):
        doc = Doc(random.Random(seed))
        text = doc.text()
        assert Doc(random.Random(seed)).text() == text  # a document depends only on its seed
        paras = text.split("\n\n")
        assert len(paras) >= 4 and paras[0][0].isupper() and "." not in paras[0]  # title
        assert sum(text.count(first) for first, _, _ in doc.cast) >= 3  # the cast recurs
        # One tense per document (outside dialogue): never both "was/were" and "is/are".
        narration = re.sub(r'"[^"]*"', "", text)
        past = re.search(r"\b(was|were)\b", narration)
        present = re.search(r"\b(is|are)\b", narration)
        assert not (past and present), text
        tenses.add(doc.past)
    assert tenses == {True, False}


def test_tokenizer_compresses_the_generated_text(corpus_root):
    corpus = ensure_default_corpus(corpus_root)
    sp = spm.SentencePieceProcessor(model_file=str(corpus.tokenizer_path))
    text = Doc(random.Random(12345)).text()
    ids = sp.encode(text)
    assert len(ids) < 0.4 * len(text.encode())
    assert sp.unk_id() not in ids
    assert load_tokens(corpus.val_pattern).max() < corpus.vocab_size

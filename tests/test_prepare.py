"""`python -m golf_jax.data.prepare`: a tiny CLI build, errors, and the golden build."""

from __future__ import annotations

import hashlib
import json
import lzma
import subprocess
import sys

import numpy as np
import pytest
import sentencepiece as spm

from golf_jax.data.prepare import Options, build
from golf_jax.data.shards import read_shard
from golf_jax.core.paths import REPO_ROOT

TEXTS = [
    "The miller carried three sacks to the old mill.",
    "Two boats sailed out at dawn; the harbour was quiet. Numbers: 12, 345.",
    "She counted 7 lanterns and then 9 ropes before the café closed.",
    "A short one.",
]


def _tiny_tokenizer(tmp_path):
    lines = [t for t in TEXTS for _ in range(20)]
    path = tmp_path / "tiny"
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_prefix=str(path), model_type="bpe",
        vocab_size=300, byte_fallback=True, split_digits=True, add_dummy_prefix=False,
        normalization_rule_name="nmt_nfkc", pad_id=0, bos_id=1, eos_id=2, unk_id=3,
        num_threads=1, minloglevel=2, hard_vocab_limit=False)
    return path.with_suffix(".model")


def _run(*args):
    return subprocess.run([sys.executable, "-m", "golf_jax.data.prepare", *map(str, args)],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)


def test_cli_tiny_build(tmp_path):
    model = _tiny_tokenizer(tmp_path)
    sp = spm.SentencePieceProcessor(model_file=str(model))
    val = tmp_path / "val.jsonl"
    lines = [json.dumps({"text": TEXTS[0], "id": 1}), "", json.dumps({"text": TEXTS[1]})]
    val.write_text("\n".join(lines) + "\n")  # blank lines are skipped
    train_xz = tmp_path / "train.jsonl.xz"
    with lzma.open(train_xz, "wt", encoding="utf-8") as f:
        f.write(json.dumps({"text": TEXTS[2]}) + "\n")
    train_txt = tmp_path / "book.txt"
    train_txt.write_text(TEXTS[3] + "\n\n" + TEXTS[0])  # a .txt file is ONE document
    out = tmp_path / "out"
    res = _run("--tokenizer", model, "--val", val, "--train", train_xz, "--train", train_txt,
               "--out", out, "--shard_tokens", 25)
    assert res.returncode == 0, res.stderr
    assert "[prepare] train: done, 2 docs" in res.stdout

    def stream(texts):
        return np.concatenate([[1] + sp.encode(t) for t in texts])

    expected = {"val": stream(TEXTS[:2]), "train": stream([TEXTS[2], TEXTS[3] + "\n\n" + TEXTS[0]])}
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["tokenizer"]["sha256"] == hashlib.sha256(model.read_bytes()).hexdigest()
    assert manifest["shard_tokens"] == 25 and manifest["convention"]["append_eos"] is False
    for split, want in expected.items():
        info = manifest["splits"][split]
        assert info["docs"] == 2 and info["tokens"] == want.size
        names = sorted(p.name for p in out.glob(f"fineweb_{split}_*.bin"))
        assert names == [s["name"] for s in info["shards"]]
        assert names[0] == f"fineweb_{split}_000000.bin"
        parts = [read_shard(out / n, vocab_size=sp.vocab_size()) for n in names]
        assert [p.size for p in parts[:-1]] == [25] * (len(parts) - 1)  # docs straddle shards
        np.testing.assert_array_equal(np.concatenate(parts), want)
        for s in info["shards"]:
            assert s["sha256"] == hashlib.sha256((out / s["name"]).read_bytes()).hexdigest()
    assert [i["sha256"] for i in manifest["splits"]["train"]["inputs"]] == [
        hashlib.sha256(p.read_bytes()).hexdigest() for p in (train_xz, train_txt)]

    # --max_docs caps each split; an existing build needs --overwrite.
    res = _run("--tokenizer", model, "--val", val, "--out", out, "--shard_tokens", 1000)
    assert res.returncode == 2 and "--overwrite" in res.stderr
    res = _run("--tokenizer", model, "--val", val, "--out", out, "--shard_tokens", 1000,
               "--max_docs", 1, "--overwrite")
    assert res.returncode == 0, res.stderr
    assert sorted(p.name for p in out.glob("*.bin")) == ["fineweb_val_000000.bin"]
    np.testing.assert_array_equal(read_shard(out / "fineweb_val_000000.bin"), stream(TEXTS[:1]))


def test_cli_errors(tmp_path):
    model = _tiny_tokenizer(tmp_path)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{"body": "no text field"}\n')
    res = _run("--tokenizer", model, "--val", bad, "--out", tmp_path / "o", "--shard_tokens", 10)
    assert res.returncode == 2 and "bad.jsonl:2" in res.stderr and "'text'" in res.stderr
    res = _run("--tokenizer", model, "--val", tmp_path / "nope.jsonl", "--out", tmp_path / "o2")
    assert res.returncode == 2 and "nope.jsonl does not exist" in res.stderr
    res = _run("--tokenizer", model, "--vocab_size", 1024, "--val", bad, "--out", tmp_path / "o3")
    assert res.returncode == 2 and "model.vocab_size" in res.stderr
    with pytest.raises(ValueError, match="unsupported type"):
        (tmp_path / "x.csv").write_text("a,b\n")
        build(model, [tmp_path / "x.csv"], [], tmp_path / "o4", Options(10))


GOLDEN = {  # docs/reference-notes.md#shared-data-facts (the golden build)
    "fineweb_val_000000.bin": "5d5ac9b83e9b116d32176c6d9889d3d7649e7128bbf88c2fe04b51a4110b318f",
    "fineweb_train_000000.bin": "5c5032fb3f5daf1b0a5866605951921f2e792d42534f6aa2a06191d65fd56a6d",
    "fineweb_train_000001.bin": "3d9a7c8361b25e61e5bb28456197e1e5d28eea42d952aabae6b5039f9efa3883",
    "fineweb_train_000002.bin": "a1a082ff2738d0313433913f2a29e404a09e8526c77230ec44291cbe7195d082",
}


@pytest.mark.shared_data
def test_golden_build(shared_data, tmp_path):
    text = shared_data / "text"
    out = tmp_path / "sp1024_demo"
    manifest = build(
        shared_data / "tokenizers" / "fineweb_1024_bpe.model",
        val=[text / "fineweb_val_200.jsonl"],
        train=[text / "gutenberg_72.jsonl.xz", text / "aeb_articles_en.jsonl"],
        out=out, options=Options(shard_tokens=4_000_000))
    got = {s["name"]: s["sha256"] for sp in manifest["splits"].values() for s in sp["shards"]}
    assert got == GOLDEN
    for name, digest in GOLDEN.items():
        assert hashlib.sha256((out / name).read_bytes()).hexdigest() == digest
    assert manifest["splits"]["val"]["docs"] == 200
    assert manifest["splits"]["val"]["tokens"] == 628_457
    assert manifest["splits"]["train"]["docs"] == 231
    assert manifest["splits"]["train"]["tokens"] == 11_588_892
    inputs = {i["path"].rsplit("/", 1)[-1]: i["sha256"] for sp in manifest["splits"].values()
              for i in sp["inputs"]}
    assert inputs["gutenberg_72.jsonl.xz"].startswith("1fccf32ca37b")  # docs/reference-notes.md#shared-data-facts
    assert manifest["tokenizer"]["sha256"].startswith("4f5e8adb109c")


def test_train_and_val_are_disjoint(tmp_path):
    """A --train document that is also a --val one is refused (how many, which file); the
    folder check reads the recorded hashes, or hashes the shards when none are recorded."""
    import shutil

    from golf_jax.data import disjoint

    model = _tiny_tokenizer(tmp_path)
    val, train_a, train_b = tmp_path / "val.jsonl", tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    val.write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS[:2]))
    train_a.write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS[1:3]))  # TEXTS[1] is in val
    train_b.write_text(json.dumps({"text": TEXTS[3]}) + "\n")
    with pytest.raises(ValueError, match=r"1 --train document\(s\) are also --val documents \(in .*a\.jsonl \(1\)\)"):
        build(model, [val], [train_a, train_b], tmp_path / "bad", Options(25))
    assert not list((tmp_path / "bad").glob("fineweb_train_*.bin"))
    res = _run("--tokenizer", model, "--val", val, "--train", val, "--out", tmp_path / "same")
    assert res.returncode == 2 and "2 --train document(s) are also --val documents" in res.stderr

    out = tmp_path / "ok"
    manifest = build(model, [val], [train_b], out, Options(25))
    assert manifest["splits"]["train"]["doc_hashes"]["docs"] == 1
    assert disjoint.check(out) == {**disjoint.check(out), "status": "disjoint", "overlap": 0, "from": "manifest"}
    # shards from elsewhere (no recorded hashes), with a val shard copied into train: hashed here
    (out / "manifest.json").unlink()
    for f in out.glob("fineweb_val_*.bin"):
        shutil.copy(f, out / f.name.replace("val", "train").replace("_0000", "_1000"))
    got = disjoint.check(out)
    assert got["status"] == "overlap" and got["overlap"] == 2 and got["from"] == "shards", got

"""The default corpus: generated English-like text, tokenizer and shards, fully offline.

Tests and smoke runs need data without ../shared. The text comes from a small
probabilistic grammar with our own word lists (no third-party text). It has learnable
structure: subject-verb agreement, one tense per document, pronouns that agree with a
recurring cast of named characters, arithmetic number sequences, dialogue, paragraphs.
A SentencePiece BPE tokenizer (vocab 1024, upstream conventions) is trained on the
first TOKENIZER_DOCS train documents; shards follow the prepare convention ([BOS] + ids
per document, no EOS). Output is cached by a hash of GENERATOR_VERSION + PARAMS: bump
GENERATOR_VERSION whenever the grammar or word lists change.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from golf_jax.data.prepare import ShardWriter, encode_documents
from golf_jax.data.shards import sha256_file
from golf_jax.core.paths import cache_dir

GENERATOR_VERSION = 2
PARAMS = {
    "seed": 20240520,
    "train_tokens": 3_000_000,  # exact: 3 shards of 1M
    "val_tokens": 150_000,
    "shard_tokens": 1_000_000,
    "vocab_size": 1024,
    "tokenizer_docs": 400,
}

_W = str.split
FIRST = {"he": _W("Tomas Oskar Aldo Peter Milo Jonas Emil Hugo Felix Anton Bruno Victor Leon "
                  "Simon Arthur Walter Rufus Dorian Edwin Gilbert"),
         "she": _W("Mara Elin Ada Lena Clara Nora Ida Greta Helen Iris Vera Lucy Rosa "
                   "Hanna Agnes Flora Martha Edith Alice Sylvia")}
SYL1 = _W("Ash Bel Cor Dun Elm Fen Gar Hol Kel Lin Mor Nor Pen Quill Ros Stan Thorn Vel Wex "
          "Yar Brad Cal Hart Lang Marl Red West Black Fair Green")
SYL2 = _W("ford wick ton ley brook field stead more dale worth by holt mere gate well bury "
          "hurst mouth ridge wood")
PEOPLE = _W("farmer teacher sailor merchant baker miller weaver carpenter doctor soldier "
            "student painter fisher hunter clerk singer potter tailor builder keeper")
THINGS = _W("basket boat lamp letter barrel bell book box bridge cart coat door fence "
            "garden hammer kettle ladder map net rope sack ship table wagon wheel window "
            "lantern blanket bottle candle chair clock cup drum key knife mirror")
ANIMALS = _W("horse dog goat sheep cow fox owl crow hen duck cat pig rabbit deer")
PLACES = _W("market mill harbour school church station tavern square farm forest valley "
            "hill river road field orchard bakery library workshop castle")
ADJ = _W("old new small large quiet bright heavy narrow wide green red dark cold warm "
         "empty busy broken clean long short wooden stone strange careful patient")
ADV = _W("slowly quickly carefully quietly early late often again gladly")
TIMES = ["in the morning", "at noon", "in the evening", "after the storm", "before dawn",
         "on Monday", "on Friday", "during the winter", "in the spring", "that night"]
VERBS = [(v, p) for v, p in (s.split("/") for s in _W(
    "carry/carried build/built paint/painted mend/mended open/opened find/found "
    "sell/sold buy/bought clean/cleaned move/moved lift/lifted fill/filled "
    "watch/watched follow/followed count/counted hide/hid bring/brought keep/kept"))]
MOTION = [(v, p) for v, p in (s.split("/") for s in _W(
    "walk/walked run/ran ride/rode sail/sailed return/returned hurry/hurried go/went"))]
SAYS = [("say", "said"), ("ask", "asked"), ("reply", "replied"), ("answer", "answered"),
        ("call", "called"), ("whisper", "whispered")]
QUOTES = ["We should leave before the rain", "The {t} is not ready yet",
          "Bring the {t} to the {p}", "I have counted {n} {ts}", "Nobody has seen the {a}",
          "The road to {town} is long", "Wait here until I come back", "Is the {t} yours"]
NUMWORD = _W("zero one two three four five six seven eight nine ten eleven twelve")


def plural(w: str) -> str:
    if w in ("sheep", "deer", "fish"):
        return w
    if w.endswith(("s", "x", "ch", "sh")):
        return w + "es"
    if w.endswith("y") and w[-2] not in "aeiou":
        return w[:-1] + "ies"
    if w == "knife":
        return "knives"
    return w + "s"


def third(v: str) -> str:
    if v == "go":
        return "goes"
    return plural(v) if not v.endswith("y") or v[-2] in "aeiou" else v[:-1] + "ies"


class Doc:
    """One document's hidden state: cast, town, tense. Sentences reuse it."""

    def __init__(self, r: random.Random) -> None:
        self.r = r
        self.past = r.random() < 0.6
        self.cast = []
        for _ in range(r.randint(2, 3)):
            g = r.choice(("he", "she"))
            self.cast.append((r.choice(FIRST[g]), r.choice(SYL1) + r.choice(SYL2), g))
        self.town, self.town2 = (r.choice(SYL1) + r.choice(SYL2) for _ in range(2))
        self.river = r.choice(SYL1) + r.choice(("water", "burn", "flow", "beck"))
        self.trade = r.choice(PEOPLE)
        self.year = r.randint(1720, 1990)
        self.last: tuple[str, str, str] | None = None  # no pronoun before a name

    def verb(self, pair: tuple[str, str], singular: bool) -> str:
        return pair[1] if self.past else (third(pair[0]) if singular else pair[0])

    def be(self, singular: bool) -> str:
        return ("was" if singular else "were") if self.past else ("is" if singular else "are")

    def np_(self, nouns: list[str]) -> str:
        r = self.r
        n = r.choice(nouns)
        k = r.random()
        if k < 0.45:
            return f"the {r.choice(ADJ)} {n}" if r.random() < 0.5 else f"the {n}"
        if k < 0.7:
            c = r.randint(2, 12)
            return f"{NUMWORD[c] if r.random() < 0.5 else c} {plural(n)}"
        return f"{'an' if n[0] in 'aeiou' else 'a'} {n}"

    def person(self) -> tuple[str, bool]:
        r = self.r
        who, k = r.choice(self.cast), r.random()
        same, self.last = who is self.last, who
        if k < 0.35 and same:
            return who[2].capitalize(), True
        return (f"{who[0]} {who[1]}" if k < 0.55 else who[0]), True

    def sentence(self) -> str:
        r, k = self.r, self.r.random()
        if k < 0.22:
            s, sg = self.person()
            obj = self.np_(THINGS)
            tail = r.choice(["", f" to the {r.choice(PLACES)}", f" {r.choice(TIMES)}",
                             f" {r.choice(ADV)}"])
            return f"{s} {self.verb(r.choice(VERBS), sg)} {obj}{tail}."
        if k < 0.36:
            c = r.randint(2, 40)
            n = r.choice(PEOPLE)
            subj = f"The {plural(n)}" if r.random() < 0.5 else f"{c} {plural(n)} from {self.town}"
            return f"{subj} {self.verb(r.choice(VERBS), False)} {self.np_(THINGS + ANIMALS)}."
        if k < 0.46:
            a, b = self.cast[0], self.cast[-1]
            self.last = None  # "he"/"she" would be ambiguous next
            return (f"{a[0]} and {b[0]} {self.verb(r.choice(MOTION), False)} to the "
                    f"{r.choice(PLACES)} {r.choice(TIMES)}.")
        if k < 0.56:
            who = self.last or self.cast[0]
            subj = who[2].capitalize() if self.last else f"{who[0]} {who[1]}"
            pro, self.last = ("his" if who[2] == "he" else "her"), who
            return (f"{subj} {self.verb(r.choice(VERBS), True)} {pro} "
                    f"{r.choice(ADJ)} {r.choice(THINGS)}, and {who[2]} "
                    f"{self.verb(r.choice(MOTION), True)} home {r.choice(ADV)}.")
        if k < 0.68:
            q = r.choice(QUOTES).format(t=r.choice(THINGS), p=r.choice(PLACES), n=r.randint(2, 99),
                                        ts=plural(r.choice(THINGS)), a=r.choice(ANIMALS),
                                        town=self.town2)
            end = "?" if q.startswith(("Is", "Are")) else ","
            who = r.choice(self.cast)
            self.last = who
            return f"\"{q}{end}\" {self.verb(r.choice(SAYS), True)} {who[0]}."
        if k < 0.78:
            a, d = r.randint(1, 30), r.randint(1, 9)
            n = r.randint(3, 5)
            seq = ", ".join(str(a + i * d) for i in range(n))
            who = self.last = r.choice(self.cast)
            return (f"{who[0]} {self.verb(('count', 'counted'), True)} {seq} and then "
                    f"{a + n * d} {plural(r.choice(THINGS))}.")
        if k < 0.86:
            n, m = r.randint(20, 900), r.randint(2, 60)
            return (f"In {self.year}, {self.town} had {n} houses and {m} "
                    f"{plural(self.trade)}.")
        if k < 0.93:
            return (f"{self.town} lies on the {self.river}, {r.randint(2, 80)} miles from "
                    f"{self.town2}.")
        sg = r.random() < 0.5
        n = r.choice(ANIMALS)
        subj = f"The {n}" if sg else f"The {plural(n)}"
        return f"{subj} {self.be(sg)} {r.choice(ADJ)} {r.choice(TIMES)}."

    def text(self) -> str:
        r = self.r
        title = r.choice([f"The {r.choice(ADJ).capitalize()} {r.choice(THINGS).capitalize()}",
                          f"Notes from {self.town}", f"A {self.trade.capitalize()} of {self.town}"])
        paras = [" ".join(self.sentence() for _ in range(r.randint(3, 7)))
                 for _ in range(r.randint(3, 8))]
        return title + "\n\n" + "\n\n".join(paras) + "\n"


def documents(split: str, seed: int) -> Iterator[str]:
    """Endless deterministic document stream; doc i depends only on (seed, split, i)."""
    offset = {"train": 0, "val": 1 << 40}[split]
    i = 0
    while True:
        yield Doc(random.Random(seed * 1_000_003 + offset + i)).text()
        i += 1


@dataclass(frozen=True)
class DefaultCorpus:
    data_dir: Path
    tokenizer_path: Path
    vocab_size: int

    @property
    def train_pattern(self) -> str:
        return str(self.data_dir / "fineweb_train_*.bin")

    @property
    def val_pattern(self) -> str:
        return str(self.data_dir / "fineweb_val_*.bin")


def corpus_key() -> str:
    blob = json.dumps({"version": GENERATOR_VERSION, **PARAMS}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def _complete(d: Path) -> bool:
    try:
        m = json.loads((d / "manifest.json").read_text())
        names = [s["name"] for sp in m["splits"].values() for s in sp["shards"]]
        return (d / m["tokenizer"]["file"]).is_file() and all((d / n).is_file() for n in names)
    except (OSError, ValueError, KeyError):
        return False


def _train_tokenizer(vocab_size: int, seed: int) -> bytes:
    import sentencepiece as spm

    spm.set_random_generator_seed(seed)
    gen = documents("train", seed)
    lines = [p for _ in range(PARAMS["tokenizer_docs"]) for p in next(gen).split("\n") if p]
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_writer=model, model_type="bpe",
        vocab_size=vocab_size, character_coverage=0.999, byte_fallback=True,
        split_digits=True, normalization_rule_name="nmt_nfkc", add_dummy_prefix=False,
        pad_id=0, bos_id=1, eos_id=2, unk_id=3, num_threads=1,
        shuffle_input_sentence=False, input_sentence_size=0, minloglevel=2)
    return model.getvalue()


def _build(out: Path) -> None:
    import sentencepiece as spm

    t0, seed = time.time(), PARAMS["seed"]
    model = _train_tokenizer(PARAMS["vocab_size"], seed)
    (out / "tokenizer.model").write_bytes(model)
    sp = spm.SentencePieceProcessor(model_proto=model)
    print(f"[default_corpus] tokenizer trained ({sp.vocab_size()} pieces, "
          f"{time.time() - t0:.1f}s)", flush=True)
    splits = {}
    for split in ("val", "train"):
        writer, gen = ShardWriter(out, split, PARAMS["shard_tokens"]), documents(split, seed)
        target = PARAMS[f"{split}_tokens"]
        while writer.tokens < target:  # the last document is cut to hit target exactly
            for doc in encode_documents(sp, [next(gen) for _ in range(64)]):
                if writer.tokens < target:
                    writer.add(doc[: target - writer.tokens])
        splits[split] = writer.close()
        print(f"[default_corpus] {split}: {splits[split]['docs']} docs, "
              f"{splits[split]['tokens']:,} tokens ({time.time() - t0:.1f}s)", flush=True)
    manifest = {"generator_version": GENERATOR_VERSION, "params": PARAMS,
                "tokenizer": {"file": "tokenizer.model", "vocab_size": sp.vocab_size(),
                              "sha256": sha256_file(out / "tokenizer.model")},
                "convention": {"bos_id": 1, "append_eos": False}, "splits": splits}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")


def ensure_default_corpus(root: Path | None = None) -> DefaultCorpus:
    """The cached default corpus under root (default cache_dir()/default_corpus), built
    on first use (~10-30 s) into a temp dir that is renamed only when complete."""
    root = Path(root) if root is not None else cache_dir() / "default_corpus"
    final = root / corpus_key()
    if not _complete(final):
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{corpus_key()}-", dir=root))
        print(f"[default_corpus] building {final}", flush=True)
        try:
            _build(tmp)
            if final.exists() and not _complete(final):
                shutil.rmtree(final)
            try:
                os.rename(tmp, final)
            except OSError:  # another process finished first
                if not _complete(final):
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return DefaultCorpus(final, final / "tokenizer.model", PARAMS["vocab_size"])

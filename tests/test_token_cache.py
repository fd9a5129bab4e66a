"""The token cache: hit, miss, invalidation, atomic entries, batching over it, and the streamed
sources (local files, a hub dataset read as a stream) it is built from."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest
from conftest import write_parallel
from synthetic import toy_pairs

from seq2seq import token_cache
from seq2seq.batching import TrainBatches
from seq2seq.config import DataConfig, VocabConfig, load_config
from seq2seq.data import load_split, pairs, side_lines
from seq2seq.errors import DataError
from seq2seq.token_cache import EncodedSplit, encoded_split, fingerprint, id_dtype
from seq2seq.training import load_training_data
from seq2seq.vocab import sample_lines, train_or_load


@pytest.fixture
def corpus(tmp_path, monkeypatch):
    monkeypatch.setenv("SEQ2SEQ_CACHE", str(tmp_path / "cache"))
    data = tmp_path / "data"
    pairs_ = toy_pairs(300)
    write_parallel(data, "train", pairs_, gz=True)
    write_parallel(data, "val", pairs_[:20])
    cfg = DataConfig(path=str(data))
    vocab, _ = train_or_load(VocabConfig(size=60), [p[0] for p in pairs_],
                             [p[1] for p in pairs_])
    return cfg, vocab, pairs_


def entries(tmp_path):
    root = tmp_path / "cache" / "tokens"
    return sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []


def test_encoded_split_equals_encoding_in_memory(corpus):
    cfg, vocab, pairs_ = corpus
    enc = encoded_split(cfg, "train", vocab, vocab, progress=False)
    assert enc.directory is not None and len(enc) == 300
    assert enc.src_ids.dtype == np.uint16 and not enc.src_ids.flags.writeable  # mapped
    src, tgt = enc.pairs(range(300))
    assert src == vocab.encode([p[0] for p in pairs_])
    assert tgt == vocab.encode([p[1] for p in pairs_])
    s_len, t_len = enc.lengths()
    assert s_len.tolist() == [len(s) for s in src] and t_len.tolist() == [len(t) for t in tgt]
    memory = encoded_split(DataConfig(path=cfg.path, token_cache=False), "train", vocab, vocab,
                           progress=False)
    assert memory.directory is None
    for name in ("src_ids", "src_offsets", "tgt_ids", "tgt_offsets"):
        assert np.array_equal(getattr(memory, name), getattr(enc, name)), name


def test_hit_miss_and_invalidation(corpus, tmp_path, monkeypatch, capsys):
    cfg, vocab, pairs_ = corpus
    writes = []
    real = token_cache._write_entry
    monkeypatch.setattr(token_cache, "_write_entry", lambda *a, **k: (writes.append(1),
                                                                      real(*a, **k)))
    first = encoded_split(cfg, "train", vocab, vocab, progress=False)
    assert "encoding the train split into the token cache" in capsys.readouterr().err
    second = encoded_split(cfg, "train", vocab, vocab, progress=False)
    assert len(writes) == 1 and second.directory == first.directory  # hit: mapped, not encoded
    assert capsys.readouterr().err == ""
    encoded_split(cfg, "train", vocab, vocab, limit=100, progress=False)  # max_sentences
    assert len(writes) == 2
    other, _ = train_or_load(VocabConfig(size=50), [p[0] for p in pairs_], [p[1] for p in pairs_])
    encoded_split(cfg, "train", other, other, progress=False)  # another vocabulary
    assert len(writes) == 3
    write_parallel(tmp_path / "data", "train", pairs_[:-1], gz=True)  # the data changed
    changed = encoded_split(cfg, "train", vocab, vocab, progress=False)
    assert len(writes) == 4 and len(changed) == 299 and changed.directory != first.directory
    assert len(entries(tmp_path)) == 4
    assert not [p for p in (tmp_path / "cache" / "tokens").glob(".*") if p.is_dir()]  # no temp
    meta = json.loads((first.directory / "meta.json").read_text())
    assert meta["pairs"] == 300 and meta["src_dtype"] == "uint16"


def test_a_failed_encoding_leaves_no_entry(corpus, tmp_path, monkeypatch):
    cfg, vocab, pairs_ = corpus
    monkeypatch.setattr(token_cache, "CHUNK", 50)  # the bad line comes after chunks are written
    path = tmp_path / "data" / "train.de.gz"
    lines = gzip.decompress(path.read_bytes()).split(b"\n")
    lines[200] = b"\xff\xfe broken"
    path.write_bytes(gzip.compress(b"\n".join(lines)))
    with pytest.raises(DataError, match=r"train.de.gz:201: not valid UTF-8"):
        encoded_split(cfg, "train", vocab, vocab, progress=False)
    assert entries(tmp_path) == []  # neither an entry nor a temporary directory


def test_unparallel_files_are_an_error_when_streamed(corpus, tmp_path):
    cfg, vocab, pairs_ = corpus
    write_parallel(tmp_path / "data", "train", pairs_, gz=True)
    (tmp_path / "data" / "train.en.gz").write_bytes(
        gzip.compress("".join(p[1] + "\n" for p in pairs_[:-2]).encode()))
    with pytest.raises(DataError, match="not a parallel corpus"):
        list(pairs(cfg, "train"))


def test_id_dtype():
    assert id_dtype(8000) == np.uint16 and id_dtype(65536) == np.uint16
    assert id_dtype(65537) == np.uint32


def test_batching_over_the_cache_equals_batching_over_lists(corpus):
    """The lengths-only batching over the cache gives the reference batches and tensors."""
    cfg, vocab, pairs_ = corpus
    enc = encoded_split(cfg, "train", vocab, vocab, progress=False)
    src, tgt = vocab.encode([p[0] for p in pairs_]), vocab.encode([p[1] for p in pairs_])
    ref = TrainBatches.from_lists(src, tgt, max_tokens=200, seed=3, bucket_pool=4)
    lens = enc.lengths()
    over_cache = TrainBatches(*lens, max_tokens=200, seed=3, bucket_pool=4, fetch=enc.pairs)
    for epoch in (1, 2):
        a, b = ref.epoch(epoch), over_cache.epoch(epoch)
        assert [x.tolist() for x in a] == [x.tolist() for x in b]
        for idx in a[:5]:
            x, y = ref.collate(idx), over_cache.collate(idx)
            assert x.src.equal(y.src) and x.tgt_in.equal(y.tgt_in) and x.tgt_out.equal(y.tgt_out)
        for idx in b:  # the reference rule: padded size within the budget, or a lone sentence
            longest = int(np.maximum(lens[0][idx], lens[1][idx]).max()) + 1
            assert len(idx) * longest <= 200 or len(idx) == 1
    assert sorted(i for idx in b for i in idx.tolist()) == list(range(300))


def test_training_data_filters_by_max_len(corpus):
    cfg, vocab, pairs_ = corpus
    lens = [(len(s), len(t)) for s, t in zip(vocab.encode([p[0] for p in pairs_]),
                                             vocab.encode([p[1] for p in pairs_]))]
    cut = int(np.median([max(x) for x in lens]))
    c = load_config(None, [f"data.path={cfg.path}", "vocab.size=60", f"data.max_len={cut}"])
    d = load_training_data(c, progress=False)
    assert d.keep.tolist() == [i for i, (s, t) in enumerate(lens) if 0 < s <= cut and 0 < t <= cut]
    assert 0 < len(d.batches) < 300


def test_sample_lines():
    lines = [f"line {i}" for i in range(1000)] + [""] * 10
    assert sample_lines(lines, 2000) == lines[:1000]  # all (no empty ones), in order
    a = sample_lines(lines, 100, seed=1)
    assert len(a) == 100 == len(set(a)) and a == sample_lines(lines, 100, seed=1)
    assert a == sorted(a, key=lambda x: int(x.split()[1]))  # original order
    assert a != sample_lines(lines, 100, seed=2)
    picks = [int(x.split()[1]) for s in range(20) for x in sample_lines(lines, 100, seed=s)]
    assert 350 < np.mean(picks) < 650  # uniform over the corpus, not its beginning


def test_side_lines_read_one_side(corpus):
    cfg, _, pairs_ = corpus
    assert list(side_lines(cfg, "train", "tgt", 5)) == [p[1] for p in pairs_[:5]]
    assert list(side_lines(cfg, "train", "src")) == [p[0] for p in pairs_]


def test_fingerprint_follows_the_bytes(corpus, tmp_path):
    cfg, _, pairs_ = corpus
    a = fingerprint(cfg, "train")
    assert a == fingerprint(cfg, "train") and a != fingerprint(cfg, "val")
    write_parallel(tmp_path / "data", "train", pairs_[::-1], gz=True)
    assert fingerprint(cfg, "train") != a


def test_hub_dataset_streamed_from_a_local_directory(tmp_path, monkeypatch):
    """The hub layout (a ``translation`` dict per row) read as a stream, offline."""
    monkeypatch.setenv("SEQ2SEQ_CACHE", str(tmp_path / "cache"))
    repo = tmp_path / "wmt_like"
    repo.mkdir()
    pairs_ = toy_pairs(120)
    for split, part in (("train", pairs_[:100]), ("validation", pairs_[100:])):
        with (repo / f"{split}.jsonl").open("w", encoding="utf-8") as f:
            for s, t in part:
                f.write(json.dumps({"translation": {"de": s, "en": t}}) + "\n")
    streamed = DataConfig(format="hub", path=str(repo), streaming=True)
    whole = DataConfig(format="hub", path=str(repo))
    assert list(pairs(streamed, "train")) == pairs_[:100] == list(pairs(whole, "train"))
    assert load_split(streamed, "validation")["tgt"] == [t for _, t in pairs_[100:]]
    assert fingerprint(streamed, "train") == fingerprint(streamed, "train")
    vocab, _ = train_or_load(VocabConfig(size=60), [p[0] for p in pairs_], [p[1] for p in pairs_])
    enc = encoded_split(streamed, "train", vocab, vocab, progress=False)
    assert enc.pairs([0, 99]) == (vocab.encode([pairs_[0][0], pairs_[99][0]]),
                                  vocab.encode([pairs_[0][1], pairs_[99][1]]))


def test_open_maps_an_entry(corpus):
    cfg, vocab, _ = corpus
    enc = encoded_split(cfg, "train", vocab, vocab, progress=False)
    again = EncodedSplit.open(enc.directory)
    assert again.pairs([7]) == enc.pairs([7])


def test_cache_usage_and_clear(corpus, tmp_path):
    cfg, vocab, _ = corpus
    encoded_split(cfg, "train", vocab, vocab, progress=False)
    usage = {kind: (n, size) for kind, n, size in token_cache.cache_usage()}
    assert usage["tokens"][0] == 1 and usage["tokens"][1] > 0 and usage["spm"][0] >= 1
    assert token_cache.clear_cache() == sum(size for _, size in usage.values())
    assert all(n == 0 for _, n, _ in token_cache.cache_usage())


def test_a_damaged_entry_is_one_line(corpus):
    cfg, vocab, _ = corpus
    enc = encoded_split(cfg, "train", vocab, vocab, progress=False)
    ids = enc.directory / "tgt.ids"
    ids.write_bytes(ids.read_bytes()[:-3])
    with pytest.raises(DataError, match=r"tgt.ids: .* a damaged token cache entry"):
        encoded_split(cfg, "train", vocab, vocab, progress=False)


def test_a_damaged_meta_file_is_one_line(corpus):
    cfg, vocab, _ = corpus
    enc = encoded_split(cfg, "train", vocab, vocab, progress=False)
    (enc.directory / "meta.json").write_text("{not json")
    with pytest.raises(DataError, match=r"meta.json: a damaged token cache entry"):
        encoded_split(cfg, "train", vocab, vocab, progress=False)

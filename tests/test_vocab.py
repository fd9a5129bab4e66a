import random

import pytest

from seq2seq import vocab as vocab_mod
from seq2seq.config import VocabConfig
from seq2seq.errors import CheckpointError, DataError
from seq2seq.run import RunDir
from seq2seq.vocab import BOS, EOS, PAD, UNK, Vocab, train_or_load


def corpus(n=400, seed=0):
    rng = random.Random(seed)
    words_de = ["Hund", "Katze", "läuft", "schläft", "im", "Schnee", "Garten", "ein", "Frau"]
    words_en = ["dog", "cat", "runs", "sleeps", "in", "the", "snow", "garden", "woman"]
    src = [" ".join(rng.choices(words_de, k=rng.randint(3, 9))) + "." for _ in range(n)]
    tgt = [" ".join(rng.choices(words_en, k=rng.randint(3, 9))) + "." for _ in range(n)]
    return src, tgt


def test_round_trip_and_special_ids(tmp_path):
    src, tgt = corpus()
    sv, tv = train_or_load(VocabConfig(size=60), src, tgt)
    assert sv is tv
    assert (sv.sp.pad_id(), sv.sp.unk_id(), sv.sp.bos_id(), sv.sp.eos_id()) == (PAD, UNK, BOS, EOS)
    ids = sv.encode(src[:20])
    assert all(PAD not in s and EOS not in s for s in ids)
    assert sv.decode(ids) == src[:20]
    # decoding stops at eos and drops pad/bos
    assert sv.decode([[BOS] + ids[0] + [EOS] + ids[1] + [PAD]]) == [src[0]]


@pytest.mark.parametrize("kind", ["unigram", "bpe"])
def test_separate_vocabularies(tmp_path, kind):
    src, tgt = corpus()
    cfg = VocabConfig(size=50, joint=False, type=kind)
    sv, tv = train_or_load(cfg, src, tgt)
    assert sv is not tv
    assert tv.decode(tv.encode(tgt[:5])) == tgt[:5]
    RunDir(tmp_path).install_vocabularies(sv, tv)
    assert sorted(p.name for p in (tmp_path / "vocab").iterdir()) == ["src.model", "tgt.model"]
    sv2, tv2 = RunDir(tmp_path).vocabularies()
    assert sv2.encode(src[:3]) == sv.encode(src[:3])


def test_cache_reused_while_unchanged(tmp_path, monkeypatch):
    monkeypatch.setenv("SEQ2SEQ_CACHE", str(tmp_path / "cache"))
    src, tgt = corpus()
    calls = []
    real = vocab_mod._train_spm
    monkeypatch.setattr(vocab_mod, "_train_spm", lambda *a: (calls.append(1), real(*a)))
    train_or_load(VocabConfig(size=60), src, tgt)
    train_or_load(VocabConfig(size=60), src, tgt)
    assert len(calls) == 1
    train_or_load(VocabConfig(size=61), src, tgt)  # settings changed
    train_or_load(VocabConfig(size=60), src[:-1], tgt)  # data changed
    assert len(calls) == 3


def test_missing_model_is_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="vocabulary model not found"):
        Vocab(tmp_path / "none.model")


def test_building_a_cache_entry_is_exclusive(tmp_path):
    """A second builder of the same entry waits for the first (then finds the entry built)."""
    import threading
    import time

    from seq2seq.vocab import building

    events = []

    def build(name, hold):
        with building(tmp_path / "entry"):
            events.append(f"{name} in")
            time.sleep(hold)
            events.append(f"{name} out")

    first = threading.Thread(target=build, args=("a", 0.3))
    first.start()
    time.sleep(0.1)
    second = threading.Thread(target=build, args=("b", 0))
    second.start()
    first.join()
    second.join()
    assert events == ["a in", "a out", "b in", "b out"]


def test_sentencepiece_failure_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("SEQ2SEQ_CACHE", str(tmp_path / "cache"))
    with pytest.raises(vocab_mod.DataError, match="^SentencePiece training failed: ") as e:
        train_or_load(VocabConfig(size=60), ["", ""], ["", ""])  # no text at all
    assert "\n" not in str(e.value)


def test_a_cache_that_is_not_a_directory_is_a_one_line_error(tmp_path, monkeypatch):
    (tmp_path / "cache").write_text("a file, not a directory")
    monkeypatch.setenv("SEQ2SEQ_CACHE", str(tmp_path / "cache"))
    with pytest.raises(DataError, match=r"^cannot use the cache directory .*cache/spm: .*Not "
                                        r"a directory.* \(SEQ2SEQ_CACHE names another; it is "
                                        r".*cache\)$"):
        with vocab_mod.building(vocab_mod.cache_root() / "spm" / "key"):
            pass

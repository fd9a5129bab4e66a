import contextlib
import threading

import pytest
import torch

from seq2seq import checkpoint as ckpt
from seq2seq import inference
from seq2seq.batching import make_batch
from seq2seq.config import load_config
from seq2seq.errors import CheckpointError, ConfigError
from seq2seq.forked import fork_available
from seq2seq.inference import Translator, decode_workers, model_from_weights, search_ids
from seq2seq.models import build_model

ARCHS = {
    "rnn": ["model.embed_size=16", "model.hidden_size=16"],
    "transformer": ["model.arch=transformer", "model.attention.score=scaled_dot",
                    "model.attention.heads=2", "model.embed_size=16", "model.ff_size=32"],
    "learned": ["model.arch=transformer", "model.attention.score=scaled_dot",
                "model.attention.heads=2", "model.embed_size=16", "model.ff_size=32",
                "model.positions=learned", "model.norm=pre"],
}


@pytest.mark.parametrize("arch", ARCHS)
def test_weights_load_into_a_model_built_without_memory(arch, tmp_path):
    cfg = load_config(None, ARCHS[arch])
    torch.manual_seed(0)
    trained = build_model(cfg.model, 30, 30).eval()
    opt = torch.optim.Adam(trained.parameters())
    path = tmp_path / "best.pt"
    ckpt.save_atomic({"model": trained.state_dict(), "config": cfg.to_dict(),
                      "optimizer": opt.state_dict()}, path)
    payload = ckpt.load(path, mmap=True)  # the optimizer state is mapped, never read
    loaded = model_from_weights(cfg, 30, 30, payload["model"], path).eval()
    assert not any(t.is_meta for t in [*loaded.parameters(), *loaded.buffers()])
    b = make_batch([[5, 6, 7], [8]], [[9, 10], [11, 12, 13]])
    with torch.no_grad():
        assert torch.equal(trained(b.src, b.src_len, b.tgt_in), loaded(b.src, b.src_len, b.tgt_in))
    wrong = load_config(None, [*ARCHS[arch], "model.embed_size=8", "model.hidden_size=8"])
    with pytest.raises(CheckpointError, match="do not fit"):
        model_from_weights(wrong, 30, 30, payload["model"], path)


def _sources(n: int) -> list[list[int]]:
    g = torch.Generator().manual_seed(1)
    return [torch.randint(4, 30, (int(torch.randint(1, 12, (1,), generator=g)),),
                          generator=g).tolist() for _ in range(n)]


@contextlib.contextmanager
def _threads(n: int):
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


LOCAL_P = ["model.decoder=luong", "model.attention.score=general",
           "model.attention.window=local-p", "model.embed_size=16", "model.hidden_size=16"]


@pytest.mark.parametrize("arch", ["rnn", "transformer", "local-p"])
@pytest.mark.parametrize("beam", [1, 3])
def test_workers_decode_what_one_thread_decodes(arch, beam):
    """decode.workers > 1 runs several batches at once, each on its share of torch's threads
    (here 1): every hypothesis (tokens, score, attention) is the one a single thread computes,
    in input order; the local-p position statistics count every step; torch's thread count is
    back afterwards."""
    cfg = load_config(None, LOCAL_P if arch == "local-p" else ARCHS[arch])
    torch.manual_seed(0)
    model = build_model(cfg.model, 30, 30).eval()
    windows = [m for m in model.modules() if hasattr(m, "position_stats")]
    src, cpu = _sources(23), torch.device("cpu")
    decode = cfg.decode.override(batch_size=4, beam_size=beam, n_best=beam)

    def run(workers):
        for w in windows:
            w.position_stats = []
        hyps = search_ids(model, src, decode.override(workers=workers), cpu,
                          return_attention=True)
        return [[(h.tokens, h.score, h.attention.tolist()) for h in hy] for hy in hyps], \
            [sorted(w.position_stats) for w in windows]

    with _threads(1):
        alone, alone_stats = run(1)
    with _threads(3):
        together, stats = run(3)
        assert torch.get_num_threads() == 3
    assert together == alone
    assert len(stats) == (arch == "local-p")
    assert stats == alone_stats  # every step's positions, none lost


@pytest.mark.skipif(not fork_available(), reason="worker processes are forked")
@pytest.mark.parametrize("arch", ["rnn", "transformer"])
@pytest.mark.parametrize("beam", [1, 3])
def test_forked_workers_decode_what_one_thread_decodes(arch, beam):
    """With ``processes`` the batches go to forked workers, one torch thread each here: every
    hypothesis (tokens, score, log-probability, attention as a tensor) is the one a single
    thread computes, in input order."""
    cfg = load_config(None, ARCHS[arch])
    torch.manual_seed(0)
    model = build_model(cfg.model, 30, 30).eval()
    src, cpu = _sources(23), torch.device("cpu")
    decode = cfg.decode.override(batch_size=4, beam_size=beam, n_best=beam)

    def run(workers, processes):
        hyps = search_ids(model, src, decode.override(workers=workers), cpu,
                          return_attention=True, processes=processes)
        assert all(isinstance(h.attention, torch.Tensor) for hy in hyps for h in hy)
        return [[(h.tokens, h.score, h.log_prob, h.attention.tolist()) for h in hy]
                for hy in hyps]

    with _threads(1):
        alone = run(1, True)  # one worker: decoded here, nothing forked
    with _threads(2):
        assert run(2, True) == alone
        assert torch.get_num_threads() == 2


def test_search_forks_workers_only_when_asked_and_able(monkeypatch):
    """Worker processes only with ``processes`` (eval and translate ask for them; validation
    in training does not), where fork is available, and where each worker's share of torch's
    threads is one (a forked worker cannot run more: seq2seq.forked)."""
    cfg = load_config(None, ARCHS["rnn"])
    model = build_model(cfg.model, 30, 30).eval()
    calls = []
    real = inference.forked_map

    def spy(task, workers):
        calls.append(workers)
        return real(task, workers)

    monkeypatch.setattr(inference, "forked_map", spy)
    decode = cfg.decode.override(batch_size=2, workers=2)
    with _threads(2):
        want = search_ids(model, _sources(8), decode, torch.device("cpu"))
        assert calls == []  # threads unless asked
        got = search_ids(model, _sources(8), decode, torch.device("cpu"), processes=True)
        assert calls == ([2] if fork_available() else [])
    with _threads(4):  # two threads a worker: threads (the tokens: scores may round apart)
        four = search_ids(model, _sources(8), decode, torch.device("cpu"), processes=True)
        assert calls == ([2] if fork_available() else [])
    with _threads(2):
        monkeypatch.setattr(inference, "fork_available", lambda: False)
        assert search_ids(model, _sources(8), decode, torch.device("cpu"), processes=True) == want
        assert calls == ([2] if fork_available() else [])
    for hyps in (got, four):
        assert [[h.tokens for h in hy] for hy in hyps] == [[h.tokens for h in hy] for hy in want]


def test_translator_forks_workers_only_when_told(tmp_path, monkeypatch):
    """A Translator decodes with threads unless its ``processes`` says otherwise; the CLI's
    eval and translate set it (a library caller's process may have threads of its own that
    a fork would catch holding a lock: seq2seq.forked)."""
    from synthetic import make_run

    from seq2seq.cli import _translator

    run = make_run(tmp_path / "run")
    tr = Translator.from_run(run, device="cpu")
    assert tr.processes is False
    seen, real = [], inference.search_ids
    monkeypatch.setattr(inference, "search_ids",
                        lambda *a, **k: seen.append(k["processes"]) or real(*a, **k))
    one = tr.translate(["a b c", "c b a"])
    tr.processes = True
    assert tr.translate(["a b c", "c b a"]) == one
    assert seen == [False, True]
    assert _translator(run, "best", "cpu", None, None, None, None, None, None).processes


def test_workers_share_torchs_threads():
    """Each worker thread decodes with threads // workers intra-op threads."""
    cfg = load_config(None, ARCHS["rnn"])
    model = build_model(cfg.model, 30, 30).eval()
    seen = set()
    encode = model.encode

    def spy(*args):
        seen.add((threading.current_thread().name.split("_")[0], torch.get_num_threads()))
        return encode(*args)

    model.encode = spy
    with _threads(4):
        search_ids(model, _sources(12), cfg.decode.override(batch_size=2, workers=2),
                   torch.device("cpu"))
        assert torch.get_num_threads() == 4
    assert seen == {("seq2seq-decode", 2)}


def test_decode_workers_count():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    with _threads(4):
        assert decode_workers(0, cpu, 100) == 2  # the default
        assert decode_workers(8, cpu, 100) == 4  # at most one per thread
        assert decode_workers(4, cpu, 3) == 3  # at most one per batch
        assert decode_workers(4, cpu, 0) == 1
        assert decode_workers(1, cpu, 100) == 1
        assert decode_workers(4, cuda, 100) == 1  # the GPU decodes one batch at a time
    with _threads(1):
        assert decode_workers(0, cpu, 100) == 1
    with pytest.raises(ConfigError, match="decode.workers"):
        load_config(None, ["decode.workers=-1"])


def test_a_failing_batch_stops_the_workers_and_restores_threads():
    cfg = load_config(None, ARCHS["rnn"])
    model = build_model(cfg.model, 30, 30).eval()
    bad = [[5, 6], [7], [99]]  # id 99 is outside the 30-word vocabulary
    with _threads(2):
        with pytest.raises(IndexError):
            search_ids(model, bad * 4, cfg.decode.override(batch_size=1, workers=2),
                       torch.device("cpu"))
        assert torch.get_num_threads() == 2

import math

import pytest
import torch

from seq2seq.batching import make_batch
from seq2seq.choices import LENGTH_PENALTIES
from seq2seq.config import DecodeConfig, load_config
from seq2seq.errors import ConfigError
from seq2seq.models import build_model
from seq2seq.models.base import Seq2SeqModel
from seq2seq.search import Beam, Greedy, make_search, max_lengths
from seq2seq.special import BOS, EOS

ARCHS = {
    "rnn": [],
    "luong": ["model.decoder=luong", "model.attention.score=general"],
    "transformer": ["model.arch=transformer", "model.attention.score=scaled_dot",
                    "model.attention.heads=2", "model.ff_size=32"],
}


def model(arch="rnn"):
    cfg = load_config(None, ["model.embed_size=16", "model.hidden_size=16", *ARCHS[arch]])
    torch.manual_seed(0)
    return build_model(cfg.model, 40, 40).eval()


def sources(n=12, seed=3):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(4, 40, (int(torch.randint(1, 15, (1,), generator=g)),),
                          generator=g).tolist() for _ in range(n)]


def tokens(results):
    return [r[0].tokens for r in results]


@pytest.mark.parametrize("arch", ARCHS)
def test_greedy_batch_equals_alone(arch):
    m = model(arch)
    src = sources()
    b = make_batch(src)
    limit = max_lengths(b.src_len, 1.5, 5)
    batched = Greedy(return_attention=True).search(m, b.src, b.src_len, limit)
    for i, s in enumerate(src):
        one = make_batch([s])
        alone = Greedy(return_attention=True).search(m, one.src, one.src_len, limit[i : i + 1])
        assert alone[0][0].tokens == batched[i][0].tokens
        assert alone[0][0].log_prob == pytest.approx(batched[i][0].log_prob, abs=1e-4)
        torch.testing.assert_close(alone[0][0].attention, batched[i][0].attention,
                                   atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("arch", ARCHS)
def test_length_limit_and_no_eos_in_output(arch):
    m = model(arch)
    src = sources()
    b = make_batch(src)
    limit = torch.full((len(src),), 3)
    for out in (Greedy(return_attention=True).search(m, b.src, b.src_len, limit),
                Beam(3, return_attention=True).search(m, b.src, b.src_len, limit)):
        for hyps, n in zip(out, b.src_len.tolist()):
            h = hyps[0]
            assert len(h.tokens) <= 2 and EOS not in h.tokens  # the limit counts the final eos
            assert h.attention.shape == (len(h.tokens) + 1, n)
            torch.testing.assert_close(h.attention.sum(-1), torch.ones(len(h.tokens) + 1))


class _EveryRowAtFirst(Beam):
    """Beam search as it was: step 0 decodes all K rows of a sentence."""

    def _decode_step(self, model, batch, step):
        return model.decode_step(batch.memory, batch.state, batch.prev, self.return_attention)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("min_len", [0, 4])
def test_beam_decodes_one_row_a_sentence_at_the_first_step(arch, min_len):
    m = model(arch)
    src = sources()
    b = make_batch(src)
    limit = max_lengths(b.src_len, 1.5, 5)
    limit[0] = 1  # only eos may follow at step 0: the sentence ends there
    rows, decode_step = [], m.decode_step

    def counting(memory, state, prev, need_attention=True):
        rows.append(prev.numel())
        return decode_step(memory, state, prev, need_attention)

    m.decode_step = counting
    got = Beam(4, n_best=4, return_attention=True, min_len=min_len).search(
        m, b.src, b.src_len, limit)
    assert rows[0] == len(src) and rows[1] == 4 * (len(src) - 1)  # one row, then the K beams
    assert got[0][0].tokens == [] and len(got[0]) == 1
    want = _EveryRowAtFirst(4, n_best=4, return_attention=True, min_len=min_len).search(
        m, b.src, b.src_len, limit)
    for g, w in zip(got, want):
        assert [h.tokens for h in g] == [h.tokens for h in w]
        for hg, hw in zip(g, w):
            assert hg.log_prob == pytest.approx(hw.log_prob, abs=1e-5)
            torch.testing.assert_close(hg.attention, hw.attention, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("arch", ["rnn", "transformer"])
def test_min_len_forces_output_length_and_the_limit_still_wins(arch):
    m = model(arch)
    src = sources()
    b = make_batch(src)
    fixed = torch.full((len(src),), 8)  # 7 tokens + eos
    for search in (Greedy(min_len=7), Beam(3, min_len=7)):
        for hyps in search.search(m, b.src, b.src_len, fixed):
            assert all(len(h.tokens) == 7 and EOS not in h.tokens for h in hyps)
            assert all(math.isfinite(h.log_prob) for h in hyps)
    short = torch.full((len(src),), 4)  # min_len beyond the limit: the limit ends the output
    for search in (Greedy(min_len=7), Beam(3, min_len=7)):
        for hyps in search.search(m, b.src, b.src_len, short):
            assert all(len(h.tokens) == 3 and math.isfinite(h.log_prob) for h in hyps)
    assert make_search(DecodeConfig(beam_size=2, min_len=5)).min_len == 5
    with pytest.raises(ConfigError, match="decode.min_len"):
        DecodeConfig().override(min_len=-1)


@pytest.mark.parametrize("arch", ARCHS)
def test_beam_one_equals_greedy(arch):
    m = model(arch)
    b = make_batch(sources(20, seed=5))
    limit = max_lengths(b.src_len, 1.5, 5)
    g = Greedy().search(m, b.src, b.src_len, limit)
    k1 = Beam(beam_size=1).search(m, b.src, b.src_len, limit)
    assert tokens(k1) == tokens(g)
    for x, y in zip(g, k1):
        assert x[0].score == pytest.approx(y[0].score, abs=1e-4)


@pytest.mark.parametrize("arch", ARCHS)
def test_beam_batch_of_64_equals_alone(arch):
    m = model(arch)
    src = sources(64, seed=7)
    b = make_batch(src)
    limit = max_lengths(b.src_len, 1.5, 5)
    beam = Beam(beam_size=4, n_best=2)
    batched = beam.search(m, b.src, b.src_len, limit)
    for i, s in enumerate(src):
        one = make_batch([s])
        alone = beam.search(m, one.src, one.src_len, limit[i : i + 1])
        assert [h.tokens for h in alone[0]] == [h.tokens for h in batched[i]]


@pytest.mark.parametrize("return_attention", [False, True])
def test_beam_with_one_memory_row_per_sentence_equals_repeated_memory(return_attention):
    """The Transformer shares each sentence's memory among its K hypotheses (K queries against
    one memory row); the search gives what repeating the memory K times gave, sentences
    dropping out of the working batch (shrink) included."""
    m = model("transformer")
    assert m.shares_memory
    b = make_batch(sources(24, seed=5))
    limit = max_lengths(b.src_len, 1.5, 5)
    beam = Beam(beam_size=4, n_best=3, return_attention=return_attention)
    shared = beam.search(m, b.src, b.src_len, limit)
    m.shares_memory = False  # the generic path: memory repeated to (B * K, ...)
    repeated = beam.search(m, b.src, b.src_len, limit)
    assert len({len(h.tokens) for hyps in shared for h in hyps}) > 1  # lengths differ: shrinks
    for a, r in zip(shared, repeated):
        assert [h.tokens for h in a] == [h.tokens for h in r]
        assert [h.score for h in a] == pytest.approx([h.score for h in r], abs=1e-5)
        for ha, hr in zip(a, r):
            if return_attention:
                torch.testing.assert_close(ha.attention, hr.attention, atol=1e-5, rtol=1e-5)
            else:
                assert ha.attention is None


@pytest.mark.parametrize("beam", [1, 4])
def test_transformer_steps_take_the_one_query_attention_on_the_cpu(beam, monkeypatch):
    """Every decoder step's self- and cross-attention runs through
    MultiHeadAttention.one_query when no weights are wanted, beam search's K hypotheses of a
    sentence against its one memory row; asking for the weights (return_attention) takes the
    general step, whose self-attention runs as batched products (attention._few_queries). A
    silent fall-back to another path fails here."""
    import seq2seq.attention as attention

    calls, few_calls = [], []
    one_query, few = attention.MultiHeadAttention.one_query, attention._few_queries

    def counted(self, x, k, v, bias=None):
        calls.append((x.size(0), k.size(0), bias is not None))
        return one_query(self, x, k, v, bias)

    monkeypatch.setattr(attention.MultiHeadAttention, "one_query", counted)
    monkeypatch.setattr(attention, "_few_queries",
                        lambda *a: few_calls.append(a[0].shape) or few(*a))
    m = model("transformer")
    b = make_batch(sources(6, seed=2))
    limit = torch.full((6,), 4)
    strategy = Beam(beam_size=beam) if beam > 1 else Greedy()
    strategy.search(m, b.src, b.src_len, limit)
    layers = len(m.decoder_layers)
    assert len(calls) >= 2 * layers * 2 and not few_calls  # self and cross, two steps or more
    if beam > 1:  # the cross-attention: a sentence's beams (6 x K rows) against one memory row
        assert (6 * beam, 6, True) in calls
    calls.clear()
    (Beam(beam_size=beam, return_attention=True) if beam > 1
     else Greedy(return_attention=True)).search(m, b.src, b.src_len, limit)
    assert not calls and len(few_calls) >= layers * 2
    m.set_hard_attention(True)  # hard attention needs the weights: the general path
    strategy.search(m, b.src, b.src_len, limit)
    assert not calls


@pytest.mark.parametrize("arch", ARCHS)
def test_nbest_sorted_and_first_is_one_best(arch):
    m = model(arch)
    b = make_batch(sources(16, seed=11))
    limit = max_lengths(b.src_len, 1.5, 5)
    one = Beam(beam_size=5, n_best=1).search(m, b.src, b.src_len, limit)
    five = Beam(beam_size=5, n_best=5).search(m, b.src, b.src_len, limit)
    for a, lst in zip(one, five):
        assert len(lst) == 5
        scores = [h.score for h in lst]
        assert scores == sorted(scores, reverse=True)
        assert lst[0].tokens == a[0].tokens
        for h in lst:  # the score is the normalised log-probability of the tokens
            assert h.score == pytest.approx(
                LENGTH_PENALTIES.get("gnmt").normalise(h.log_prob, len(h.tokens) + 1, 0.6))


class MarkovModel(Seq2SeqModel):
    """A hand-built model: P(next | previous token) from a fixed table, ignoring the source.

    Tokens: 4 = a, 5 = b. From bos: a 0.6, b 0.4. After a: a 0.4, b 0.3, eos 0.3.
    After b: eos 0.9, a 0.1. Greedy follows a, a, a, ... (best path 0.6 * 0.4 * ... ), while
    the best sequence is "b" with P = 0.4 * 0.9 = 0.36 (the next most probable, "a", has 0.18;
    "ab" has 0.162)."""

    V = 6

    def __init__(self):
        super().__init__()
        table = torch.full((self.V, self.V), 1e-9)
        table[BOS, 4], table[BOS, 5] = 0.6, 0.4
        table[4, 4], table[4, 5], table[4, EOS] = 0.4, 0.3, 0.3
        table[5, EOS], table[5, 4] = 0.9, 0.1
        table[EOS, EOS] = 1.0
        self.register_buffer("log_table", (table / table.sum(-1, keepdim=True)).log())

    def encode(self, src, src_len):
        return {"mask": src != 0}

    def init_state(self, memory):
        return {"dummy": torch.zeros(memory["mask"].size(0), 1)}

    def decode_step(self, memory, state, prev, need_attention=True):
        return self.log_table[prev], state, None


@pytest.mark.parametrize("penalty", ["gnmt", "average", "none"])
def test_beam_finds_the_best_sequence_greedy_misses(penalty):
    m = MarkovModel()
    src = torch.tensor([[7, 8, EOS], [7, EOS, 0]])
    src_len = torch.tensor([3, 2])
    limit = torch.tensor([8, 8])
    g = Greedy().search(m, src, src_len, limit)
    assert g[0][0].tokens == [4] * 7  # a, a, a, ... until the length limit
    out = Beam(beam_size=2, n_best=2, length_penalty=penalty).search(m, src, src_len, limit)
    for nbest in out:
        assert nbest[0].tokens == [5]
        assert nbest[0].log_prob == pytest.approx(math.log(0.36), abs=1e-5)
        # the runner-up "ab" (0.162): "a" (0.18) ties "ab"'s prefix for the second beam at
        # step 2 and loses the tie, which beam search (not an exact search) may do
        assert nbest[1].tokens == [4, 5]
        assert nbest[1].log_prob == pytest.approx(math.log(0.162), abs=1e-5)


def test_strategy_scores_with_its_length_penalty():
    assert Greedy("none").score(-2.0, 3) == -2.0
    assert Beam(2, 1, "average").score(-2.0, 4) == -0.5
    assert Greedy("gnmt", 1.0).score(-2.0, 7) == pytest.approx(-1.0)
    with pytest.raises(ConfigError):
        Greedy("bogus")


def test_max_lengths():
    assert max_lengths(torch.tensor([2, 10]), 1.5, 4).tolist() == [7, 19]
    assert max_lengths(torch.tensor([2, 10]), 1.5, 4, cap=12).tolist() == [7, 12]


def test_make_search_picks_the_strategy_and_checks_options():
    greedy = make_search(DecodeConfig(beam_size=1, length_penalty="average"))
    assert type(greedy) is Greedy and greedy.penalty.name == "average"
    beam = make_search(DecodeConfig(beam_size=4, n_best=3, alpha=1.0), return_attention=True)
    assert type(beam) is Beam and (beam.width, beam.n_best, beam.alpha) == (4, 3, 1.0)
    assert beam.return_attention
    with pytest.raises(ConfigError):  # before any work
        Beam(length_penalty="bogus")
    with pytest.raises(ValueError):
        Beam(beam_size=2, n_best=3)


@pytest.mark.parametrize("shape,k", [((64, 40000), 10), ((3, 64 * 40), 10), ((5, 1000), 4),
                                     ((2, 64 * 8), 10)])
def test_top_k_equals_torch_topk(shape, k):
    """Two passes (block maxima, then the best blocks) find torch.topk's values and indices,
    -inf and ties across blocks included; shapes that are not whole blocks fall back."""
    from seq2seq.search import top_k

    g = torch.Generator().manual_seed(0)
    x = torch.randn(*shape, generator=g)
    x[0, : shape[1] // 2] = float("-inf")  # masked continuations
    x[-1, 5], x[-1, shape[1] - 7] = 50.0, 49.0  # the best two far apart
    values, indices = top_k(x, k)
    ref = x.topk(k, dim=1)
    assert torch.equal(values, ref.values) and torch.equal(indices, ref.indices)
    assert indices[-1, :2].tolist() == [5, shape[1] - 7]

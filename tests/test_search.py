import pytest
import torch

from seq2seq.batching import make_batch
from seq2seq.config import load_config
from seq2seq.models import build_model
from seq2seq.search import greedy, max_lengths
from seq2seq.vocab import EOS

ARCHS = {
    "rnn": [],
    "transformer": ["model.arch=transformer", "model.attention.score=scaled_dot",
                    "model.attention.heads=2", "model.ff_size=32"],
}


def model(arch="rnn"):
    cfg = load_config(None, ["model.embed_size=16", "model.hidden_size=16", *ARCHS[arch]])
    torch.manual_seed(0)
    return build_model(cfg.model, 40, 40).eval()


def sources(n=12):
    g = torch.Generator().manual_seed(3)
    return [torch.randint(4, 40, (int(torch.randint(1, 15, (1,), generator=g)),),
                          generator=g).tolist() for _ in range(n)]


@pytest.mark.parametrize("arch", ARCHS)
def test_batch_equals_alone(arch):
    m = model(arch)
    src = sources()
    b = make_batch(src)
    limit = max_lengths(b.src_len, 1.5, 5)
    batched, attn = greedy(m, b.src, b.src_len, limit, return_attention=True)
    for i, s in enumerate(src):
        one = make_batch([s])
        alone, attn1 = greedy(m, one.src, one.src_len, limit[i : i + 1], return_attention=True)
        assert alone[0] == batched[i]
        torch.testing.assert_close(attn1[0], attn[i], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("arch", ARCHS)
def test_length_limit_and_no_eos_in_output(arch):
    m = model(arch)
    src = sources()
    b = make_batch(src)
    limit = torch.full((len(src),), 3)
    out, attn = greedy(m, b.src, b.src_len, limit, return_attention=True)
    assert all(len(o) <= 2 and EOS not in o for o in out)  # the limit counts the final eos
    for o, a, n in zip(out, attn, b.src_len.tolist()):
        assert a.shape == (len(o) + 1, n)
        torch.testing.assert_close(a.sum(-1), torch.ones(len(o) + 1))


def test_max_lengths():
    assert max_lengths(torch.tensor([2, 10]), 1.5, 4).tolist() == [7, 19]
    assert max_lengths(torch.tensor([2, 10]), 1.5, 4, cap=12).tolist() == [7, 12]

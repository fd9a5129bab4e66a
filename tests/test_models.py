import pytest
import torch

from seq2seq.config import ModelConfig, load_config
from seq2seq.models import build_model, select
from seq2seq.vocab import BOS

V = 30
VARIANTS = {
    "bahdanau-gru": [],
    "bahdanau-lstm-2layer": ["model.cell=lstm", "model.encoder_layers=2",
                             "model.decoder_layers=2"],
    "luong-general-feed": ["model.attention.style=luong", "model.attention.score=general"],
    "luong-dot-nofeed": ["model.attention.style=luong", "model.attention.score=dot",
                         "model.attention.input_feeding=false"],
    "unidirectional-untied": ["model.bidirectional=false", "model.tie_output=false",
                              "model.share_embeddings=false", "vocab.joint=false"],
}


def model_for(overrides) -> torch.nn.Module:
    cfg = load_config(None, ["model.embed_size=16", "model.hidden_size=16", *overrides])
    torch.manual_seed(0)
    return build_model(cfg.model, V, V).eval()


def toy_batch():
    torch.manual_seed(1)
    src = torch.randint(4, V, (3, 6))
    src_len = torch.tensor([6, 4, 2])
    src[1, 4:] = 0
    src[2, 2:] = 0
    tgt_in = torch.cat([torch.full((3, 1), BOS), torch.randint(4, V, (3, 4))], dim=1)
    return src, src_len, tgt_in


@pytest.mark.parametrize("name", VARIANTS)
def test_teacher_forcing_equals_stepwise_decoding(name):
    model = model_for(VARIANTS[name])
    src, src_len, tgt_in = toy_batch()
    with torch.no_grad():
        full = torch.log_softmax(model(src, src_len, tgt_in), dim=-1)  # (B, T, V)
        memory = model.encode(src, src_len)
        state = model.init_state(memory)
        for t in range(tgt_in.size(1)):
            lp, state, attn = model.decode_step(memory, state, tgt_in[:, t])
            torch.testing.assert_close(lp, full[:, t], atol=1e-5, rtol=1e-5)
            assert attn.shape == src.shape
            assert (attn[src == 0] == 0).all()


@pytest.mark.parametrize("name", VARIANTS)
def test_sentence_alone_equals_sentence_in_padded_batch(name):
    model = model_for(VARIANTS[name])
    src, src_len, tgt_in = toy_batch()
    with torch.no_grad():
        batch = model(src, src_len, tgt_in)
        alone = model(src[2:3, :2], src_len[2:3], tgt_in[2:3])
    torch.testing.assert_close(batch[2:3], alone, atol=1e-5, rtol=1e-5)


def test_state_can_be_reordered():
    model = model_for([])
    src, src_len, _ = toy_batch()
    memory = model.encode(src, src_len)
    state = model.init_state(memory)
    idx = torch.tensor([2, 0, 0])
    prev = torch.full((3,), BOS)
    lp_all, _, _ = model.decode_step(memory, state, prev)
    lp_sel, _, _ = model.decode_step(select(memory, idx), select(state, idx), prev[idx])
    torch.testing.assert_close(lp_sel, lp_all[idx])


def test_tied_and_shared_embeddings():
    model = model_for([])
    assert model.generator.weight is model.tgt_embedding.weight
    assert model.encoder.embedding is model.tgt_embedding
    untied = model_for(VARIANTS["unidirectional-untied"])
    assert untied.generator.weight is not untied.tgt_embedding.weight


def test_gradients_reach_every_parameter():
    model = model_for([]).train()
    src, src_len, tgt_in = toy_batch()
    model(src, src_len, tgt_in).logsumexp(-1).sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_default_model_config_builds():
    build_model(ModelConfig(), 100, 100)

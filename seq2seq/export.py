"""Export a trained Transformer run for serving elsewhere: ``seq2seq export``.

``ctranslate2`` writes a `CTranslate2 <https://github.com/OpenNMT/CTranslate2>`_ model directory
(``ctranslate2.Translator(OUT)``): our weights mapped onto its ``TransformerSpec``, the
vocabularies in id order, and the run's SentencePiece model(s), so OUT is self-contained::

    model.bin, config.json                  CTranslate2's weights and configuration
    shared_vocabulary.json                  or source_/target_vocabulary.json: pieces by id
    source.spm, target.spm                  the SentencePiece models that tokenize
    seq2seq_export.json                     where it came from, how to tokenize

The mapping (``d = embed_size``, ``h`` heads; CTranslate2's linear weights are (out, in), as
in torch, and it splits heads the way :class:`~seq2seq.attention.MultiHeadAttention` does)::

    src_embed / tgt_embed           embeddings.weight (V, d); scale_embeddings (sqrt(d)) as the
                                    stack's scale_embeddings and multiply_by_sqrt_depth;
                                    position_encodings.encodings: our (max_length, d) table,
                                    sinusoidal or learned, set explicitly (the table CTranslate2
                                    generates when none is given does not reproduce ours)
    self_attn  W_q, W_kv, W_o       linear[0] = [W_q; W_kv] (3d, d): q, k, v; linear[1] = W_o
    cross_attn W_q, W_kv, W_o       linear[0] = W_q; linear[1] = W_kv (2d, d): k, v; linear[2]
    ff.w1, ff.w2                    ffn.linear_0, ffn.linear_1 (ReLU)
    sub norms (encoder 1-2,         self_attention / attention / ffn .layer_norm: CTranslate2
      decoder 1-3)                  puts each sub-layer's norm before it (pre_norm) or after the
                                    residual (post), as our Sublayer does
    enc_norm, dec_norm (pre only)   encoder/decoder.layer_norm (a post-norm spec has none)
    generator (weight, bias)        decoder.projection (the tied weight is aliased on save)

Our source side ends with eos (:func:`seq2seq.batching.make_batch`): the exported config sets
``add_source_eos``, so CTranslate2 appends ``</s>`` itself; the decoder starts from ``<s>``
(our bos). The layer norm epsilon is written from the model (torch's 1e-5) rather than left to
CTranslate2's default.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import nn

from seq2seq import __version__
from seq2seq.errors import CheckpointError, ConfigError, Seq2SeqError, one_line
from seq2seq.inference import load_run_model
from seq2seq.models.transformer import sinusoidal_positions
from seq2seq.run import RunDir
from seq2seq.special import BOS, EOS, UNK
from seq2seq.vocab import Vocab

# CTranslate2's weight types (``none``: float32, as trained)
CT2_QUANTIZATIONS = ("none", "int8", "int8_float32", "int8_float16", "int8_bfloat16", "int16",
                     "float16", "bfloat16", "float32")
MANIFEST = "seq2seq_export.json"
SOURCE_SPM, TARGET_SPM = "source.spm", "target.spm"

Weights = dict[str, torch.Tensor]


def export_model(run_dir: str | Path, out_dir: str | Path, fmt: str = "ctranslate2",
                 checkpoint: str = "best", quantization: str = "none",
                 overwrite: bool = False) -> Path:
    """Export a run to ``out_dir`` in the format ``fmt`` (one of :data:`FORMATS`)."""
    if fmt not in FORMATS:
        raise ConfigError(f"--format: must be one of {', '.join(FORMATS)}, got {fmt!r}")
    return FORMATS[fmt](run_dir, out_dir, checkpoint=checkpoint, quantization=quantization,
                        overwrite=overwrite)


def export_ctranslate2(run_dir: str | Path, out_dir: str | Path, checkpoint: str = "best",
                       quantization: str = "none", overwrite: bool = False) -> Path:
    """Write ``checkpoint`` of a Transformer run as a CTranslate2 model directory ``out_dir``
    (weights as ``quantization`` says, one of :data:`CT2_QUANTIZATIONS`); returns ``out_dir``.
    The directory is written beside ``out_dir`` and renamed into place at the end, so a failure
    never leaves a part of it; an existing non-empty ``out_dir`` is replaced only with
    ``overwrite``."""
    if quantization not in CT2_QUANTIZATIONS:
        raise ConfigError(f"--quantization: must be one of {', '.join(CT2_QUANTIZATIONS)}, "
                          f"got {quantization!r}")
    out = Path(out_dir)
    check_output(out, overwrite)
    ct2 = import_ctranslate2()
    run = RunDir(run_dir).require()
    path, cfg, model, src_vocab, tgt_vocab = load_run_model(run, checkpoint)
    if cfg.model.arch != "transformer":
        raise ConfigError(f"model.arch: CTranslate2 export supports model.arch: transformer, "
                          f"but {run} is {cfg.model.arch!r} (CTranslate2 has no equivalent of "
                          "its RNN decoders)")
    spec = transformer_spec(ct2, model)
    configure(spec, src_vocab, tgt_vocab, layer_norm_eps(model))
    manifest = {
        "format": "ctranslate2", "ctranslate2_version": ct2.__version__,
        "seq2seq_version": __version__, "run": str(run.path.resolve()),
        "checkpoint": str(path.resolve()), "checkpoint_name": checkpoint,
        "quantization": quantization, "joint_vocabulary": src_vocab is tgt_vocab,
        "source_tokenizer": SOURCE_SPM, "target_tokenizer": TARGET_SPM,
        "source_eos": "added by CTranslate2 (config.json add_source_eos); do not append </s>",
        "decoder_start": spec.config.decoder_start_token,
        # the position table's size: longer input (with </s>) or output is an error there
        "max_positions": cfg.model.max_length,
    }

    def write(tmp: Path) -> None:
        try:
            spec.validate()
            spec.optimize(quantization=None if quantization == "none" else quantization)
            spec.save(str(tmp))
        except (ValueError, RuntimeError) as e:
            raise Seq2SeqError(f"CTranslate2 export failed: {one_line(e)}") from None
        shutil.copyfile(src_vocab.path, tmp / SOURCE_SPM)
        shutil.copyfile(tgt_vocab.path, tmp / TARGET_SPM)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")

    write_directory(out, write, overwrite)
    return out


FORMATS: dict[str, Callable[..., Path]] = {"ctranslate2": export_ctranslate2}


def import_ctranslate2() -> ModuleType:
    """The ctranslate2 package, imported only for an export (``import seq2seq`` never needs
    it); a one-line error when it is missing."""
    try:
        import ctranslate2
    except ImportError:
        raise Seq2SeqError("CTranslate2 export needs the ctranslate2 package: "
                           "pip install 'seq2seq[ctranslate2]'") from None
    return ctranslate2


def usage_hint(out: str | Path) -> list[str]:
    """Two lines telling how to translate with the exported directory ``out``."""
    return [
        f'tokenize: sp = sentencepiece.SentencePieceProcessor(model_file="{out}/{SOURCE_SPM}"); '
        "tokens = sp.encode(line, out_type=str)  (CTranslate2 appends </s> itself)",
        f'translate: ctranslate2.Translator("{out}").translate_batch([tokens])[0].hypotheses[0], '
        f"then decode_pieces() with {out}/{TARGET_SPM}",
    ]


# ------------------------------------------------------------------------------------------------
# The output directory


def check_output(out: Path, overwrite: bool) -> None:
    """Refuse, before any work, an ``out`` that is a file, or a non-empty directory unless
    ``overwrite``."""
    if out.exists() and not out.is_dir():
        raise CheckpointError(f"{out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise CheckpointError(f"{out} exists and is not empty; choose another directory or "
                              "pass --overwrite to replace it")


def write_directory(out: Path, write: Callable[[Path], None], overwrite: bool) -> None:
    """Have ``write`` fill a temporary directory beside ``out``, then rename it to ``out``
    (an old ``out`` is moved aside first and deleted after): a failure leaves ``out`` as it
    was."""
    check_output(out, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    old = None
    try:
        write(tmp)
        if out.exists():
            old = out.with_name(f".{out.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(out, old)
        os.replace(tmp, out)
    except OSError as e:
        if old is not None and not out.exists():
            os.replace(old, out)
        raise Seq2SeqError(f"cannot write {out}: {one_line(e)}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and out.exists():
            shutil.rmtree(old, ignore_errors=True)


# ------------------------------------------------------------------------------------------------
# The mapping onto CTranslate2's TransformerSpec


def layer_norm_eps(model: nn.Module) -> float:
    """The epsilon of the model's layer norms (one value for all)."""
    eps = {m.eps for m in model.modules() if isinstance(m, nn.LayerNorm)}
    if len(eps) != 1:
        raise ConfigError(f"model: layer norms with different epsilons {sorted(eps)}")
    return eps.pop()


def transformer_spec(ct2: ModuleType, model: nn.Module) -> Any:
    """A ``ctranslate2.specs.TransformerSpec`` holding the weights of our ``Transformer``."""
    specs, cfg = ct2.specs, model.cfg
    pre = cfg.norm == "pre"
    encoder = specs.TransformerEncoderSpec(cfg.encoder_layers, cfg.attention.heads, pre_norm=pre,
                                           activation=specs.Activation.RELU)
    decoder = specs.TransformerDecoderSpec(cfg.decoder_layers, cfg.attention.heads, pre_norm=pre,
                                           activation=specs.Activation.RELU)
    w = {k: v.detach().float().cpu().contiguous() for k, v in model.state_dict().items()}
    set_embeddings(encoder, w, "src_embed", cfg)
    set_embeddings(decoder, w, "tgt_embed", cfg)
    for i, layer in enumerate(encoder.layer):
        p = f"encoder_layers.{i}"
        set_attention(layer.self_attention, w, f"{p}.self_attn", self_attention=True)
        set_norm(layer.self_attention.layer_norm, w, f"{p}.sub1.norm")
        set_ffn(layer.ffn, w, f"{p}.ff")
        set_norm(layer.ffn.layer_norm, w, f"{p}.sub2.norm")
    for i, layer in enumerate(decoder.layer):
        p = f"decoder_layers.{i}"
        set_attention(layer.self_attention, w, f"{p}.self_attn", self_attention=True)
        set_norm(layer.self_attention.layer_norm, w, f"{p}.subs.0.norm")
        set_attention(layer.attention, w, f"{p}.cross_attn", self_attention=False)
        set_norm(layer.attention.layer_norm, w, f"{p}.subs.1.norm")
        set_ffn(layer.ffn, w, f"{p}.ff")
        set_norm(layer.ffn.layer_norm, w, f"{p}.subs.2.norm")
    if pre:  # the final norm of each stack; a post-norm spec has no such variable
        set_norm(encoder.layer_norm, w, "enc_norm")
        set_norm(decoder.layer_norm, w, "dec_norm")
    set_linear(decoder.projection, *linear(w, "generator"))  # (V, d), (V,)
    return specs.TransformerSpec(encoder, decoder)


def set_embeddings(stack: Any, w: Weights, prefix: str, cfg: Any) -> None:
    """Token embeddings (scaled by sqrt(d) as ours are) and our position table (n, d)."""
    emb = w[f"{prefix}.embedding.weight"]  # (V, d)
    # the encoder may have several source embeddings (factors): a list of one here
    spec = stack.embeddings[0] if isinstance(stack.embeddings, list) else stack.embeddings
    spec.weight = emb
    # CTranslate2 4.8 reads the stack's scale_embeddings flag for a TransformerSpec and ignores
    # the embeddings' multiply_by_sqrt_depth; both are set so that either reading agrees
    spec.multiply_by_sqrt_depth = bool(cfg.scale_embeddings)
    stack.scale_embeddings = bool(cfg.scale_embeddings)
    if cfg.positions == "learned":
        table = w[f"{prefix}.learned.weight"]
    else:
        table = sinusoidal_positions(cfg.max_length, emb.size(1))
    stack.position_encodings.encodings = table  # (max_length, d)


def set_attention(spec: Any, w: Weights, prefix: str, self_attention: bool) -> None:
    """Our W_q (d, d), W_kv (2d, d) = [keys | values] and W_o onto CTranslate2's fused
    linears: self-attention [q | k | v] (3d, d) and W_o; cross-attention q, [k | v], W_o."""
    (q, q_bias), (kv, kv_bias) = linear(w, f"{prefix}.W_q"), linear(w, f"{prefix}.W_kv")
    if self_attention:
        qkv_bias = None if q_bias is None else torch.cat([q_bias, kv_bias])  # (3d,)
        set_linear(spec.linear[0], torch.cat([q, kv]), qkv_bias)  # (3d, d)
        set_linear(spec.linear[1], *linear(w, f"{prefix}.W_o"))
    else:
        set_linear(spec.linear[0], q, q_bias)
        set_linear(spec.linear[1], kv, kv_bias)
        set_linear(spec.linear[2], *linear(w, f"{prefix}.W_o"))


def set_ffn(spec: Any, w: Weights, prefix: str) -> None:
    """FFN(x) = max(0, x W_1 + b_1) W_2 + b_2."""
    set_linear(spec.linear_0, *linear(w, f"{prefix}.w1"))
    set_linear(spec.linear_1, *linear(w, f"{prefix}.w2"))


def linear(w: Weights, prefix: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The weight (out, in) and bias (out,) or None of our ``nn.Linear`` at ``prefix``."""
    return w[f"{prefix}.weight"], w.get(f"{prefix}.bias")


def set_linear(spec: Any, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
    spec.weight = weight  # (out, in), as torch stores it
    if bias is not None:
        spec.bias = bias


def set_norm(spec: Any, w: Weights, prefix: str) -> None:
    spec.gamma = w[f"{prefix}.weight"]
    spec.beta = w[f"{prefix}.bias"]


def configure(spec: Any, src_vocab: Vocab, tgt_vocab: Vocab, eps: float) -> None:
    """Vocabularies in id order, the special tokens and the layer norm epsilon."""
    src, tgt = pieces(src_vocab), pieces(tgt_vocab)
    if src[: EOS + 1] != tgt[: EOS + 1]:  # CTranslate2 knows the special tokens by their strings
        raise CheckpointError(f"{src_vocab.path}: special pieces {src[: EOS + 1]} differ from "
                              f"the target's {tgt[: EOS + 1]}")
    spec.register_source_vocabulary(src)
    spec.register_target_vocabulary(tgt)
    spec.config.unk_token = tgt[UNK]
    spec.config.bos_token = tgt[BOS]
    spec.config.eos_token = tgt[EOS]
    spec.config.decoder_start_token = tgt[BOS]  # our searches start from bos
    spec.config.add_source_eos = True  # our encoder reads the source followed by eos
    spec.config.layer_norm_epsilon = eps


def pieces(vocab: Vocab) -> list[str]:
    """The vocabulary's pieces in id order (pad, unk, bos, eos first)."""
    return [vocab.sp.id_to_piece(i) for i in range(len(vocab))]

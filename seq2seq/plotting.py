"""Figures: attention heatmaps of single sentences, and the charts of ``seq2seq report``.

Matplotlib runs on its file-only ``Agg`` backend, so plotting works without a display.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from seq2seq.batching import make_batch  # noqa: E402
from seq2seq.errors import Seq2SeqError  # noqa: E402

if TYPE_CHECKING:
    from seq2seq.inference import Translation, Translator


def _heatmap(fig: plt.Figure, ax: plt.Axes, src: list[str], tgt: list[str], weights: Any,
             name: str) -> None:
    """One attention map (T, S) on ``ax``: source subwords along the x axis, output subwords
    down the y axis, darker = more weight, as in Bahdanau et al. 2014, Fig. 3."""
    w = weights.float().numpy() if isinstance(weights, torch.Tensor) else weights
    im = ax.imshow(w, cmap="Greys", vmin=0.0, vmax=1.0, aspect="equal", interpolation="nearest")
    ax.set_xticks(range(len(src)))
    ax.set_xticklabels(src, rotation=90, fontsize=8)
    ax.set_yticks(range(len(tgt)))
    ax.set_yticklabels(tgt, fontsize=8)
    ax.set_xlabel("source subwords")
    ax.set_ylabel("output subwords")
    ax.set_title(name, fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="attention weight")


def attention_figure(src_pieces: list[str], tgt_pieces: list[str],
                     maps: dict[str, torch.Tensor], title: str = "") -> plt.Figure:
    """One heatmap per entry of ``maps`` (each (T, S)) of one source and output."""
    panels = [(name, src_pieces, tgt_pieces, w) for name, w in maps.items()]
    return attention_panels(panels, title)


def attention_panels(panels: list[tuple[str, list[str], list[str], Any]], title: str = "",
                     columns: int = 4) -> plt.Figure:
    """Heatmaps side by side, ``columns`` a row, each ``(name, source pieces, output pieces,
    weights (T, S))`` with its own output (the models of a comparison translate the same source
    differently)."""
    S = max(len(src) for _, src, _, _ in panels)
    T = max(len(tgt) for _, _, tgt, _ in panels)
    cell = 0.32
    width, height = max(3.5, 1.6 + cell * S), max(2.5, 1.4 + cell * T)
    cols = min(len(panels), columns)
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    for ax, (name, src, tgt, weights) in zip(axes.flat, panels):
        _heatmap(fig, ax, src, tgt, weights, name)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def translation_maps(translator: Translator, t: Translation, head: int | None = None
                     ) -> dict[str, torch.Tensor]:
    """The attention over the source while the model reads its own output ``t``, by name,
    each (T, S): the RNN's attention; per decoder layer the Transformer's cross-attention, the
    heads' mean or ``head`` (from 1). Empty for a model without attention."""
    b = make_batch([t.src_tokens], [t.tokens]).to(translator.device)
    raw = translator.model.attention_maps(b.src, b.src_len, b.tgt_in)  # name -> (1, h, T+1, S)
    out = {}
    for name, w in raw.items():
        heads = w.size(1)
        if head is not None and heads > 1:
            out[f"{name}, head {head}"] = w[0, head - 1].cpu()
        else:
            label = f"{name}, mean of {heads} heads" if heads > 1 else name
            out[label] = w[0].mean(0).cpu()
    return out


class AttentionPlotter:
    """Writes ``DIR/NNNNN.png`` with the attention of the 1-best translation of input line N:
    one panel for an RNN attention, one per decoder layer for the Transformer (its heads'
    mean, or the ``head`` chosen, counted from 1)."""

    def __init__(self, translator: Translator, directory: Path, head: int | None = None):
        self.tr, self.dir, self.head = translator, Path(directory), head
        heads = translator.config.model.attention.heads
        if head is not None and not 1 <= head <= heads:
            raise Seq2SeqError(f"--head {head}: the model has {heads} head"
                               + ("s" if heads > 1 else ""))
        if self.dir.exists() and not self.dir.is_dir():
            raise Seq2SeqError(f"--plot-attention {self.dir}: exists and is not a directory")
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise Seq2SeqError(f"--plot-attention {self.dir}: cannot create it "
                               f"({e.strerror or e})") from None
        if not os.access(self.dir, os.W_OK | os.X_OK):
            raise Seq2SeqError(f"--plot-attention {self.dir}: not writable")

    def maps(self, t: Translation) -> dict[str, torch.Tensor]:
        return translation_maps(self.tr, t, self.head)

    def plot(self, line_no: int, t: Translation) -> Path | None:
        maps = self.maps(t)
        if not maps:  # a model without attention
            return None
        src = self.tr.src_vocab.pieces(t.src_tokens) + ["</s>"]
        tgt = self.tr.tgt_vocab.pieces(t.tokens) + ["</s>"]
        fig = attention_figure(src, tgt, maps, title=t.text)
        path = self.dir / f"{line_no:05d}.png"
        fig.savefig(path, dpi=120)
        plt.close(fig)
        return path


def bar_chart(names: list[str], values: list[float], ylabel: str, path: Path,
              title: str = "") -> None:
    fig, ax = plt.subplots(figsize=(max(4.0, 0.8 * len(names) + 1.5), 3.6))
    bars = ax.bar(range(len(names)), values, color="#4c72b0")
    ax.bar_label(bars, labels=[f"{v:.1f}" for v in values], fontsize=8)
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def learning_curves(curves: dict[str, list[dict[str, Any]]], path: Path,
                    metric: str = "bleu", log_time: bool = False) -> None:
    """Validation ``metric`` of every run against training minutes (left; logarithmic with
    ``log_time``) and updates (right), on shared axes with one legend."""
    fig, (ax_t, ax_u) = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    # up to 10 runs: tab10 colours; more: 20 colours and a second line style and marker, so
    # that no two runs look alike
    many = len(curves) > 10
    colours = plt.get_cmap("tab20" if many else "tab10").colors
    any_timed = False
    for i, (name, rows) in enumerate(curves.items()):
        rows = [r for r in rows if r.get(metric) is not None]
        if not rows:
            continue
        ys = [r[metric] for r in rows]
        style = {"color": colours[i % len(colours)], "ms": 3,
                 "linestyle": "--" if many and i % 2 else "-",
                 "marker": "s" if many and i % 2 else "o"}
        # a logarithmic axis cannot show time 0 (a validation before any training): such
        # points stay on the updates axis only
        timed = [(r["train_s"] / 60, y) for r, y in zip(rows, ys)
                 if not log_time or r["train_s"] > 0]
        ax_t.plot([t for t, _ in timed], [y for _, y in timed], label=name, **style)
        ax_u.plot([r["update"] for r in rows], ys, **style)
        any_timed = any_timed or bool(timed)
    label = {"bleu": "validation BLEU", "chrf": "validation chrF", "loss": "validation loss"}
    log_time = log_time and any_timed
    ax_t.set_xlabel("training time (minutes" + (", log scale)" if log_time else ")"))
    if log_time:
        ax_t.set_xscale("log")
    ax_u.set_xlabel("updates")
    ax_t.set_ylabel(label.get(metric, metric))
    for ax in (ax_t, ax_u):
        ax.grid(alpha=0.3)
    handles, labels = ax_t.get_legend_handles_labels()
    fig.tight_layout()
    # outside the axes, on the right; the saved figure grows to hold it whatever the names
    fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


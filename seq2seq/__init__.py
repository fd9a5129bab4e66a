"""seq2seq: neural machine translation from the RNN encoder-decoder to the Transformer."""

__version__ = "0.1.0"

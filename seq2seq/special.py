"""The special token ids that every vocabulary and every model share.

SentencePiece models are trained with these ids (``seq2seq/vocab.py``); models use ``PAD`` for
padded positions and searches start from ``BOS`` and stop at ``EOS``.
"""

PAD, UNK, BOS, EOS = 0, 1, 2, 3

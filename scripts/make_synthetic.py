"""Write a large synthetic parallel corpus in the local layout, for the scale tests.

    python scripts/make_synthetic.py --pairs 4500000 --out data/synthetic4m5

The training split is ``--pairs`` pairs drawn with replacement from Multi30k's training pairs,
each side's words shuffled independently (so the corpus has Multi30k's vocabulary and length
distribution but few repeated sentences); ``val`` and ``test_2016_flickr`` are Multi30k's own.
Files are ``{split}.{lang}.gz``, as ``data.format: local`` reads them; the same ``--seed``
writes the same corpus.
"""

from __future__ import annotations

import argparse
import gzip
import random
import shutil
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
CHUNK = 100_000


def read(path: Path) -> list[str]:
    with gzip.open(path, "rt", encoding="utf-8", newline="\n") as f:
        return [line.rstrip("\r\n") for line in f]


def write_train(src_lines: list[str], tgt_lines: list[str], n: int, seed: int,
                src_out: Path, tgt_out: Path) -> None:
    rng = np.random.default_rng(seed)
    shuffle = random.Random(seed).shuffle
    src_words = [s.split() for s in src_lines]
    tgt_words = [t.split() for t in tgt_lines]
    start = time.time()
    with gzip.open(src_out, "wt", encoding="utf-8", compresslevel=1) as fs, \
            gzip.open(tgt_out, "wt", encoding="utf-8", compresslevel=1) as ft:
        for done in range(0, n, CHUNK):
            picks = rng.integers(0, len(src_words), size=min(CHUNK, n - done)).tolist()
            src_chunk, tgt_chunk = [], []
            for i in picks:
                s, t = src_words[i][:], tgt_words[i][:]
                shuffle(s)
                shuffle(t)
                src_chunk.append(" ".join(s))
                tgt_chunk.append(" ".join(t))
            fs.write("\n".join(src_chunk) + "\n")
            ft.write("\n".join(tgt_chunk) + "\n")
            print(f"\r{done + len(picks):,} / {n:,} pairs ({time.time() - start:.0f} s)",
                  end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, required=True, help="training pairs to write")
    ap.add_argument("--out", type=Path, required=True, help="directory to write")
    ap.add_argument("--source", type=Path, default=ROOT.parent / "shared/data/multi30k",
                    help="Multi30k in the local layout (default: ../shared/data/multi30k)")
    ap.add_argument("--langs", default="de,en", help="the two languages (default: de,en)")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    src_lang, tgt_lang = args.langs.split(",")
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        src = read(args.source / f"train.{src_lang}.gz")
        tgt = read(args.source / f"train.{tgt_lang}.gz")
        write_train(src, tgt, args.pairs, args.seed, args.out / f"train.{src_lang}.gz",
                    args.out / f"train.{tgt_lang}.gz")
        for split in ("val", "test_2016_flickr"):
            for lang in (src_lang, tgt_lang):
                name = f"{split}.{lang}.gz"
                shutil.copyfile(args.source / name, args.out / name)
    except OSError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {args.pairs:,} training pairs ({src_lang}-{tgt_lang}) and Multi30k's val and "
          f"test_2016_flickr into {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

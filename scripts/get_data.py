"""Put Multi30k (task 1, raw, gzipped) under data/multi30k (`make data`).

Uses a local copy when one exists (``../shared/data/multi30k`` beside the working directory or
the project, or --from), otherwise downloads the files from the public Multi30k repository.
Training does the same by itself for configs with ``data.fetch: multi30k``
(``seq2seq/download.py``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from seq2seq.download import FILES, fetch_multi30k
from seq2seq.errors import DataError

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, default=ROOT / "data" / "multi30k")
    ap.add_argument("--from", dest="src", type=Path, default=None,
                    help="local directory with the .gz files (default: ../shared/data/multi30k "
                    "when it exists, else the network)")
    args = ap.parse_args()
    try:
        fetch_multi30k(args.out, args.src)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"Multi30k is in {args.out} ({len(FILES)} files)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Put Multi30k (task 1, raw, gzipped) under data/multi30k.

Uses a local copy when one exists (``../shared/data/multi30k`` beside the project, or --from),
otherwise downloads the files from the public Multi30k repository.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import urllib.request
from pathlib import Path

URL = "https://raw.githubusercontent.com/multi30k/dataset/master/data/task1/raw/{name}"
SPLITS = ("train", "val", "test_2016_flickr")
LANGS = ("en", "de", "fr", "cs")
ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, default=ROOT / "data" / "multi30k")
    ap.add_argument("--from", dest="src", type=Path, default=ROOT.parent / "shared/data/multi30k",
                    help="local directory with the .gz files (used when it exists)")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    names = [f"{s}.{lang}.gz" for s in SPLITS for lang in LANGS]
    for name in names:
        target = args.out / name
        if target.is_file() and target.stat().st_size > 0:
            continue
        local = args.src / name
        if local.is_file():
            shutil.copyfile(local, target)
            continue
        tmp = target.with_suffix(".part")
        try:
            url = URL.format(name=name)
            with urllib.request.urlopen(url, timeout=60) as r, tmp.open("wb") as f:
                shutil.copyfileobj(r, f)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            print(f"error: cannot fetch {name} ({e}); copy Multi30k into {args.out} by hand",
                  file=sys.stderr)
            return 1
        tmp.replace(target)
    print(f"Multi30k is in {args.out} ({len(names)} files)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

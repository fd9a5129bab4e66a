# The commands a user and a developer run. Each target is a one-liner over the real tool.
PYTHON ?= python3
# The CPU build of PyTorch by default (where a CPU wheel is on pip's path, as on our CI machines);
# with a GPU: `make install TORCH=torch` (or any torch requirement you need).
TORCH ?= torch==2.13.0
CONFIG ?= configs/multi30k/bahdanau.yaml

.PHONY: install test lint format data train bench reproduce clean

install:
	$(PYTHON) -m pip install "$(TORCH)" -e ".[dev]"

test:
	$(PYTHON) -m pytest -q

lint:
	$(PYTHON) -m ruff check seq2seq tests scripts

format:
	$(PYTHON) -m ruff format seq2seq tests scripts

data:
	$(PYTHON) scripts/get_data.py --out data/multi30k

train:
	seq2seq train --config $(CONFIG)

bench:
	$(PYTHON) scripts/bench.py

reproduce:
	seq2seq reproduce configs/progression.yaml --readme README.md

clean:
	rm -rf build *.egg-info .pytest_cache .ruff_cache

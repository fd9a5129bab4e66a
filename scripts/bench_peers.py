"""seq2seq against OpenNMT-py 3.5.1 and CTranslate2: training and decoding speed, measured in one
run on this machine.

    python scripts/bench_peers.py                          # all of it, 100 training updates
    python scripts/bench_peers.py --updates 30 --only train
    python scripts/bench_peers.py --only train --rounds 2     # each tool twice, alternating
    python scripts/bench_peers.py --only decode --json peers.json   # the models trained before

The peers live in a virtual environment of their own (``--venv``, default
~/.cache/seq2seq-peers/venv), made on first use and reused after: torch 2.13.0 (CPU), OpenNMT-py
3.5.1 installed without its declared dependencies (it asks for torch<2.3; it trains and
translates with 2.13) plus the packages it imports (PEER_REQUIREMENTS), and CTranslate2 4.x.
seq2seq runs through its own CLI and scripts/bench.py with this interpreter, and this script reads
its runs through seq2seq.run; nothing of OpenNMT-py's environment is imported here, so the two
torch installations never meet.

Fairness rules:

* Same data: Multi30k de->en, the 29,000 training pairs (pairs longer than 100 subwords are
  dropped on both sides, as seq2seq's data.max_len does) and test_2016_flickr (1,000 sentences).
* Same subword model: each seq2seq run's joint SentencePiece model (8,000 pieces) encodes the
  data for OpenNMT-py, and its pieces are OpenNMT-py's vocabulary; only the special tokens are
  each tool's own.
* Same models: OpenNMT-py configs written to match configs/multi30k/transformer.yaml and
  bahdanau.yaml (ONMT_MODELS says what OpenNMT-py cannot match); both parameter counts are shown.
* Same token budget: batches of at most the seq2seq config's ``train.batch_tokens`` padded
  tokens, ``train.accumulate`` of them summed into an update (OpenNMT-py's ``batch_size`` and
  ``accum_count``), the same number of updates, fp32, the CPU, torch's default threads (one per
  core) in both tools.
* Same measure: training throughput is target tokens per wall-clock second over the log windows
  (every 10 updates) after the first WARMUP_UPDATES updates, which hold data loading and warm-up.
  seq2seq's tokens are its window rate (tgt_tokens_per_s) times the window's wall_s; OpenNMT-py's
  are the average target tokens per batch of its ``Step`` line (bsz) times the batches in the
  window (updates times accum_count), over the seconds between the millisecond timestamps of
  consecutive ``Step`` lines (its printed tok/s rates are not used). With ``--rounds N`` each
  tool trains N times, the order alternating (seq2seq first, then OpenNMT-py first, ...), and
  each tool's rate is the median of its rounds: the speed of a shared VM drifts within minutes,
  and one tool timed after the other would carry that drift into the ratio.
* Same decoding work: test_2016_flickr in batches of 64 sentences, greedy and beam 5, every
  output exactly FIXED_LENGTH decoder steps (seq2seq: --fixed-length, 19 tokens and eos;
  OpenNMT-py and CTranslate2: min = max length, 20 tokens that the cap ends), timed without
  model loading; output tokens/s = sentences * FIXED_LENGTH / seconds. CTranslate2 decodes the
  converted OpenNMT-py Transformer in fp32. Each tool decodes with the threads spent two ways,
  one batch at a time on all of them (CTranslate2 inter_threads 1, seq2seq decode.workers 1)
  and one batch per thread (inter_threads = threads, intra_threads 1; decode.workers = threads),
  and the faster is compared (both are in the JSON). CTranslate2 converts only OpenNMT-py's
  Transformers, so only the Transformers are decoded. On a CPU with bf16 arithmetic, seq2seq
  also decodes with ``--quantize bf16`` (its linear layers' products in bf16) in two more
  columns; CTranslate2 has no bf16 on a CPU, so it stays at fp32, and the fp32 column is the
  like-for-like comparison.

Peak RSS is the largest resident set of a training process or of a child it waited for
(os.wait4, what /usr/bin/time reports). The load average at the start and the end is printed:
other processes on the machine slow both tools, and not necessarily equally.
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import os
import re
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from seq2seq.config import load_config  # noqa: E402
from seq2seq.run import RunDir  # noqa: E402
from seq2seq.runtime import cpu_has_bf16, cpu_info  # noqa: E402

CACHE = Path.home() / ".cache" / "seq2seq-peers"
SRC_LANG, TGT_LANG = "de", "en"
TRAIN_SPLIT, TEST_SPLIT = "train", "test_2016_flickr"
MAX_LEN = 100  # data.max_len of both seq2seq configs
LOG_EVERY = 10  # train.log_every / report_every
WARMUP_UPDATES = 20  # log windows starting before this update are not counted
FIXED_LENGTH = 20
DECODE_BATCH = 64
BEAMS = (1, 5)
MODELS = {"transformer": ROOT / "configs/multi30k/transformer.yaml",
          "bahdanau": ROOT / "configs/multi30k/bahdanau.yaml"}
DECODED_MODEL = "transformer"

# The peers' environment: torch first (pip takes the local CPU wheel), OpenNMT-py without its
# dependencies, then what OpenNMT-py 3.5.1 imports to train and translate (its transforms
# package imports every transform, hence spacy, fasttext, regex, rapidfuzz and ahocorasick),
# and CTranslate2. The versions this script was tested with.
TORCH_REQUIREMENT = "torch==2.13.0"
ONMT_REQUIREMENT = "OpenNMT-py==3.5.1"
PEER_REQUIREMENTS = (
    "ConfigArgParse==1.9.0", "PyYAML==6.0.4", "pyonmttok==1.38.1", "sacrebleu==2.6.0",
    "spacy==3.8.18", "fasttext-wheel==0.9.2", "regex==2026.11.19", "rapidfuzz==3.14.6",
    "pyahocorasick==2.3.1", "ctranslate2==4.8.5",
)

# OpenNMT-py options shared by both models: data, batching, fp32 on the CPU, logging.
ONMT_COMMON = {
    "share_vocab": True, "seed": 1234, "model_dtype": "fp32", "batch_type": "tokens",
    "normalization": "tokens", "optim": "adam", "report_every": LOG_EVERY,
    "valid_steps": 10**9, "overwrite": True, "hidden_size": 256, "word_vec_size": 256,
    "share_embeddings": True, "share_decoder_embeddings": True,
    # one process like seq2seq (the default 2 loader processes would share the 2 cores)
    "num_workers": 0,
}
ONMT_MODELS = {
    # Differences: OpenNMT-py 3.5 has only pre-norm layers (seq2seq's config is post-norm), so
    # it adds a final layer norm to the encoder and decoder (+1,024 parameters).
    # self_attn_type scaled-dot: the only kind CTranslate2 converts; on the CPU OpenNMT-py
    # computes attention the same way for it and for its default, scaled-dot-flash.
    "transformer": {
        "encoder_type": "transformer", "decoder_type": "transformer", "enc_layers": 3,
        "dec_layers": 3, "transformer_ff": 1024, "heads": 4, "position_encoding": True,
        "self_attn_type": "scaled-dot", "add_qkvbias": True, "add_ffnbias": True,
        "dropout": [0.1], "attention_dropout": [0.1], "label_smoothing": 0.1,
        "param_init": 0.0, "param_init_glorot": True, "adam_beta1": 0.9, "adam_beta2": 0.98,
        # noam: learning_rate * d^-0.5 * min(u^-0.5, u * w^-1.5), seq2seq's inverse_sqrt with
        # peak 0.001 at u = w = 300 when learning_rate = 0.001 * sqrt(d * w)
        "decay_method": "noam", "warmup_steps": 300, "learning_rate": 0.001 * math.sqrt(256 * 300),
        "max_grad_norm": 1.0,
    },
    # Differences: OpenNMT-py's RNN decoder is Luong's with input feeding (attention from the
    # new state s_i after the GRU step; the attentional vector tanh(W[c; s_i]) is fed into the
    # next step), seq2seq's is Bahdanau's (attention from s_{i-1}, the context c_i into the GRU
    # step); both GRUs take 512 inputs. seq2seq's output layer also reads the previous target
    # embedding (768 -> 256, +65,536 parameters); the bridge from the encoder's final states to
    # s_0 is ReLU(W h) per direction here (128 -> 128 twice), tanh(W_s h<-_1) from the backward
    # direction in seq2seq's bahdanau.yaml (128 -> 256): the same 33,024 parameters.
    "bahdanau": {
        "encoder_type": "brnn", "decoder_type": "rnn", "rnn_type": "GRU", "enc_layers": 1,
        "dec_layers": 1, "global_attention": "mlp", "input_feed": 1, "bridge": True,
        "dropout": [0.2], "learning_rate": 0.001, "max_grad_norm": 5.0,
    },
}

ONMT_STEP = re.compile(r"^\[(\S+ \S+) INFO\] Step\s+(\d+)/\s*\d+;.*?bsz:\s*\d+/\s*(\d+)/")
ONMT_PARAMS = re.compile(r"\* number of parameters: (\d+)")
ONMT_TIME = re.compile(r"Total translation time \(s\): ([\d.]+)")

CT2_TIMER = """
import json, sys, time
import ctranslate2
model, src, threads, batch, length, beams = sys.argv[1:7]
tokens = [line.split() for line in open(src, encoding="utf-8")]
result = {}
for inter in sorted({1, int(threads)}):  # one batch on all threads; one batch per thread
    translator = ctranslate2.Translator(model, device="cpu", compute_type="float32",
                                        intra_threads=int(threads) // inter, inter_threads=inter)
    for beam in map(int, beams.split(",")):
        translator.translate_batch(tokens[: 2 * int(batch)], max_batch_size=int(batch),
                                   beam_size=beam)  # warm-up, untimed
        t0 = time.perf_counter()
        out = translator.translate_batch(tokens, max_batch_size=int(batch),
                                         beam_size=beam,
                                         min_decoding_length=int(length),
                                         max_decoding_length=int(length))
        seconds = time.perf_counter() - t0
        result[f"{beam} {inter}"] = {"s": seconds,
                                     "lengths": sorted({len(r.hypotheses[0]) for r in out})}
    del translator
print(json.dumps(result))
"""


@dataclass
class Window:
    """One training log window: updates (start, end], its wall-clock seconds and target tokens."""

    start: int
    end: int
    seconds: float
    tgt_tokens: float


@dataclass
class Peers:
    """The peers' virtual environment."""

    venv: Path

    def bin(self, name: str) -> str:
        return str(self.venv / "bin" / name)

    @property
    def env(self) -> dict[str, str]:
        # OpenNMT-py 3.5.1's checkpoints hold an argparse.Namespace, which torch>=2.6 refuses
        return {**os.environ, "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"}


# --------------------------------------------------------------------------------------------
# Processes, machine


def run_measured(cmd: list[str], log: Path, env: dict[str, str] | None = None,
                 cwd: Path | None = None) -> tuple[float, float]:
    """Run ``cmd`` with its output in ``log``; (wall seconds, peak RSS in MiB). Exits with the
    log's last lines if the command fails."""
    log.parent.mkdir(parents=True, exist_ok=True)
    shown = " ".join("<script>" if "\n" in arg else arg for arg in cmd)
    print(f"  $ {shown[:160]}{' ...' if len(shown) > 160 else ''}  (log: {log})", flush=True)
    with log.open("w", encoding="utf-8") as out:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        tail = "\n".join(log.read_text(encoding="utf-8", errors="replace").splitlines()[-15:])
        raise SystemExit(f"failed (exit {proc.returncode}): {' '.join(cmd)}\n{tail}")
    return seconds, usage.ru_maxrss / 1024


def ensure_venv(venv: Path) -> Peers:
    """Create the peers' virtual environment unless one made with these requirements exists."""
    peers = Peers(venv)
    marker = venv / "seq2seq-peers-requirements.txt"
    wanted = "\n".join([TORCH_REQUIREMENT, ONMT_REQUIREMENT, *PEER_REQUIREMENTS]) + "\n"
    if marker.is_file() and marker.read_text() == wanted:
        return peers
    print(f"setting up the peers' environment in {venv} (once)", flush=True)
    logs = venv.parent / "install-logs"
    if not (venv / "bin" / "python").exists():
        run_measured([sys.executable, "-m", "venv", str(venv)], logs / "venv.log")
    pip = [peers.bin("python"), "-m", "pip", "install"]
    run_measured([*pip, TORCH_REQUIREMENT], logs / "torch.log")
    run_measured([*pip, "--no-deps", ONMT_REQUIREMENT], logs / "opennmt-py.log")
    run_measured([*pip, *PEER_REQUIREMENTS], logs / "requirements.log")
    marker.write_text(wanted)
    return peers


def python_facts(python: str) -> dict:
    """torch's version and thread count as ``python`` sees them."""
    code = "import json, torch; print(json.dumps([torch.__version__, torch.get_num_threads()]))"
    out = subprocess.run([python, "-c", code], capture_output=True, text=True, check=True)
    version, threads = json.loads(out.stdout.strip().splitlines()[-1])
    return {"torch": version, "threads": threads}


def machine_facts(peers: Peers) -> dict:
    """CPU model, native bf16 arithmetic, load, and torch on both sides."""
    ours, theirs = python_facts(sys.executable), python_facts(peers.bin("python"))
    return {"cpu": cpu_info()[0], "cores": os.cpu_count(),
            "avx512_bf16_or_amx": cpu_has_bf16(),
            "torch_seq2seq": ours["torch"], "torch_peers": theirs["torch"],
            "threads_seq2seq": ours["threads"], "threads_peers": theirs["threads"],
            "load_at_start": os.getloadavg()[0]}


# --------------------------------------------------------------------------------------------
# Data for OpenNMT-py and CTranslate2


def data_file(data: Path, split: str, lang: str) -> Path:
    plain = data / f"{split}.{lang}"
    return plain if plain.exists() else plain.with_name(plain.name + ".gz")


def read_lines(path: Path) -> list[str]:
    """The sentences of a plain or gzipped file, stripped as seq2seq strips them."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        return [line.strip() for line in f]


def write_pieces(path: Path, pieces: list[list[str]]) -> None:
    path.write_text("".join(" ".join(p) + "\n" for p in pieces), encoding="utf-8")


def prepare_onmt_data(sp_model: Path, data: Path, out: Path) -> int:
    """Encode train and test with seq2seq's SentencePiece model into space-separated pieces,
    write its pieces as OpenNMT-py's vocabulary; returns the number of training pairs."""
    import sentencepiece as spm  # a seq2seq dependency, so this interpreter has it

    sp = spm.SentencePieceProcessor(model_file=str(sp_model))
    src = sp.encode(read_lines(data_file(data, TRAIN_SPLIT, SRC_LANG)), out_type=str)
    tgt = sp.encode(read_lines(data_file(data, TRAIN_SPLIT, TGT_LANG)), out_type=str)
    pairs = [(s, t) for s, t in zip(src, tgt, strict=True)
             if 0 < len(s) <= MAX_LEN and 0 < len(t) <= MAX_LEN]
    out.mkdir(parents=True, exist_ok=True)
    write_pieces(out / "train.src", [s for s, _ in pairs])
    write_pieces(out / "train.tgt", [t for _, t in pairs])
    test = read_lines(data_file(data, TEST_SPLIT, SRC_LANG))
    write_pieces(out / "test.src", sp.encode(test, out_type=str))
    # OpenNMT-py adds its own <unk>, <blank>, <s>, </s> in front: 4 + 7,996 = 8,000
    pieces = [sp.id_to_piece(i) for i in range(sp.get_piece_size())
              if not (sp.is_control(i) or sp.is_unknown(i))]
    (out / "vocab.txt").write_text("".join(p + "\n" for p in pieces), encoding="utf-8")
    return len(pairs)


def onmt_batching(model: str) -> dict:
    """OpenNMT-py's batch size and gradient accumulation: the seq2seq config's."""
    train = load_config(MODELS[model]).train
    return {"batch_size": train.batch_tokens, "accum_count": [train.accumulate],
            "accum_steps": [0]}


def write_onmt_config(model: str, out: Path, n_train: int, updates: int) -> Path:
    """OpenNMT-py's YAML config for ``model`` (JSON values are YAML)."""
    opts = {
        "data": {"corpus_1": {"path_src": str(out / "train.src"),
                              "path_tgt": str(out / "train.tgt")}},
        "src_vocab": str(out / "vocab.txt"), "save_model": str(out / "model"),
        "train_steps": updates, "save_checkpoint_steps": updates,
        # one bucket = one epoch; the default (262,144 examples) would cycle Multi30k 9 times
        # into memory before the first batch
        "bucket_size": n_train,
        **ONMT_COMMON, **ONMT_MODELS[model], **onmt_batching(model),
    }
    path = out / "onmt.yaml"
    path.write_text("".join(f"{k}: {json.dumps(v)}\n" for k, v in opts.items()))
    return path


# --------------------------------------------------------------------------------------------
# Training


def steady_rate(windows: list[Window]) -> dict:
    """Target tokens per second over the windows that start after the warm-up, and each such
    window's own rate (a spread shows other load on the machine)."""
    kept = [w for w in windows if w.start >= WARMUP_UPDATES]
    if not kept:
        raise SystemExit(f"no log window after update {WARMUP_UPDATES}: train longer")
    return {"tgt_tok_s": sum(w.tgt_tokens for w in kept) / sum(w.seconds for w in kept),
            "window_tgt_tok_s": [round(w.tgt_tokens / w.seconds) for w in kept]}


def seq2seq_windows(run: RunDir) -> list[Window]:
    """Windows between consecutive ``train`` records of a run's metrics log."""
    train = run.records("train")
    return [Window(a["update"], b["update"], b["wall_s"] - a["wall_s"],
                   b["tgt_tokens_per_s"] * (b["wall_s"] - a["wall_s"]))
            for a, b in zip(train, train[1:])]


def onmt_windows(log: str, accum: int = 1) -> list[Window]:
    """Windows between consecutive ``Step`` lines of an OpenNMT-py training log (``bsz`` is
    per batch, ``accum`` batches an update)."""
    steps = []
    for line in log.splitlines():
        m = ONMT_STEP.match(line)
        if m:
            stamp = datetime.strptime(m[1], "%Y-%m-%d %H:%M:%S,%f").timestamp()
            steps.append((int(m[2]), stamp, int(m[3])))
    return [Window(u0, u1, t1 - t0, bsz_tgt * (u1 - u0) * accum)
            for (u0, t0, _), (u1, t1, bsz_tgt) in zip(steps, steps[1:])]


def train_seq2seq(model: str, work: Path, data: Path, updates: int) -> dict:
    run = work / "seq2seq" / model
    sets = {"data.path": data, "train.max_updates": updates, "train.log_every": LOG_EVERY,
            "train.valid_every": 10**9, "train.max_minutes": "null",
            # the final validation: loss only (no greedy decoding of the validation set)
            "train.valid_bleu": "false", "train.valid_metric": "loss"}
    cmd = [sys.executable, "-m", "seq2seq", "train", "--config", str(MODELS[model]),
           "--run-dir", str(run), "--overwrite", "--no-progress"]
    cmd += [arg for k, v in sets.items() for arg in ("--set", f"{k}={v}")]
    seconds, rss = run_measured(cmd, work / "logs" / f"seq2seq-{model}-train.log", cwd=ROOT)
    summary = RunDir(run).read_summary() or {}
    return {"params": summary["parameters"], "precision": summary["precision"],
            **steady_rate(seq2seq_windows(RunDir(run))),
            "peak_rss_mib": rss, "process_s": seconds}


def train_onmt(model: str, peers: Peers, work: Path, data: Path, updates: int) -> dict:
    out = work / "onmt" / model
    spm_model = RunDir(work / "seq2seq" / model).vocabularies()[0].path  # joint: both sides
    n_train = prepare_onmt_data(spm_model, data, out)
    config = write_onmt_config(model, out, n_train, updates)
    log = work / "logs" / f"onmt-{model}-train.log"
    seconds, rss = run_measured([peers.bin("onmt_train"), "-config", str(config)], log,
                                env=peers.env)
    text = log.read_text(encoding="utf-8")
    params = ONMT_PARAMS.search(text)
    windows = onmt_windows(text, onmt_batching(model)["accum_count"][0])
    return {"params": int(params[1]) if params else None, **steady_rate(windows),
            "peak_rss_mib": rss, "process_s": seconds}


def combine_rounds(rounds: list[dict]) -> dict:
    """One tool's training figures over several rounds: the median of the rounds' rates (with
    two rounds, their mean), each round's rate, the largest peak RSS."""
    return {**rounds[0], "tgt_tok_s": statistics.median(r["tgt_tok_s"] for r in rounds),
            "round_tgt_tok_s": [round(r["tgt_tok_s"]) for r in rounds],
            "peak_rss_mib": max(r["peak_rss_mib"] for r in rounds),
            "process_s": sum(r["process_s"] for r in rounds)}


def bench_training(peers: Peers, work: Path, data: Path, updates: int,
                   models: list[str] | None = None, rounds: int = 1) -> list[dict]:
    """Train each model with both tools, ``rounds`` times, alternating which goes first
    (seq2seq, OpenNMT-py, OpenNMT-py, seq2seq, ...), so that a machine whose speed drifts
    during the run slows both alike; each tool's rate is the median over its rounds."""
    rows = []
    for model in models or list(MODELS):
        ours, theirs = [], []
        for r in range(rounds):
            order = ["seq2seq", "onmt"] if r % 2 == 0 else ["onmt", "seq2seq"]
            if not ours:  # OpenNMT-py reads the SentencePiece model of a seq2seq run
                order = ["seq2seq", "onmt"]
            print(f"training {model}, round {r + 1} of {rounds}: "
                  f"{' then '.join('OpenNMT-py' if t == 'onmt' else t for t in order)}, "
                  f"{updates} updates each", flush=True)
            for tool in order:
                if tool == "seq2seq":
                    ours.append(train_seq2seq(model, work, data, updates))
                else:
                    theirs.append(train_onmt(model, peers, work, data, updates))
        a, b = combine_rounds(ours), combine_rounds(theirs)
        rows.append({"model": model, "updates": updates, "rounds": rounds, "seq2seq": a,
                     "onmt": b, "ratio": a["tgt_tok_s"] / b["tgt_tok_s"],
                     "round_ratios": [x["tgt_tok_s"] / y["tgt_tok_s"]
                                      for x, y in zip(ours, theirs)]})
    return rows


# --------------------------------------------------------------------------------------------
# Decoding


def onmt_model(work: Path) -> Path:
    """The last checkpoint of the OpenNMT-py model that is decoded."""
    found = sorted((work / "onmt" / DECODED_MODEL).glob("model_step_*.pt"),
                   key=lambda p: int(p.stem.rsplit("_", 1)[1]))
    if not found or not RunDir(work / "seq2seq" / DECODED_MODEL).last.exists():
        raise SystemExit(f"no trained {DECODED_MODEL} models in {work}: run --only train first")
    return found[-1]


def check_lengths(lengths: list[int], tool: str) -> None:
    if set(lengths) != {FIXED_LENGTH}:
        raise SystemExit(f"{tool}: output lengths {sorted(set(lengths))}, not {FIXED_LENGTH}")


def decode_onmt(peers: Peers, model: Path, test_src: Path, work: Path) -> dict[int, float]:
    """onmt_translate's own translation time (model loading excluded), per beam."""
    seconds = {}
    for beam in BEAMS:
        hyp = test_src.with_name(f"hyp.beam{beam}.txt")
        log = work / "logs" / f"onmt-translate-beam{beam}.log"
        run_measured([peers.bin("onmt_translate"), "-model", str(model), "-src", str(test_src),
                      "-output", str(hyp), "-gpu", "-1", "-batch_type", "sents",
                      "-batch_size", str(DECODE_BATCH), "-beam_size", str(beam),
                      "-min_length", str(FIXED_LENGTH), "-max_length", str(FIXED_LENGTH),
                      "-max_length_ratio", "0",  # else at most 1.25 * source length + 5
                      "-report_time"], log, env=peers.env)
        check_lengths([len(line.split()) for line in hyp.read_text().splitlines()], "OpenNMT-py")
        found = ONMT_TIME.search(log.read_text(encoding="utf-8"))
        if not found:
            raise SystemExit(f"no translation time in {log}")
        seconds[beam] = float(found[1])
    return seconds


def decode_ct2(peers: Peers, model: Path, test_src: Path, work: Path, threads: int
               ) -> dict[int, dict[int, float]]:
    """Convert the OpenNMT-py model; time translate_batch alone, per beam and per number of
    batches decoded at once (inter_threads: 1, with all threads on one batch, and one per
    thread): seconds[beam][batches at once]."""
    ct2 = model.with_name("ct2")
    run_measured([peers.bin("ct2-opennmt-py-converter"), "--model_path", str(model),
                  "--output_dir", str(ct2), "--force", "--unsafe_deserialization"],
                 work / "logs" / "ct2-convert.log", env=peers.env)
    log = work / "logs" / "ct2-translate.log"
    args = [ct2, test_src, threads, DECODE_BATCH, FIXED_LENGTH, ",".join(map(str, BEAMS))]
    run_measured([peers.bin("python"), "-c", CT2_TIMER, *map(str, args)], log, env=peers.env)
    result = json.loads(log.read_text().strip().splitlines()[-1])
    seconds: dict[int, dict[int, float]] = {}
    for key, r in result.items():
        check_lengths(r["lengths"], "CTranslate2")
        beam, inter = map(int, key.split())
        seconds.setdefault(beam, {})[inter] = r["s"]
    return seconds


def decode_seq2seq(work: Path, sentences: int, threads: int, quantize: str = "none"
                   ) -> dict[int, dict[int, float]]:
    """Output tokens/s from scripts/bench.py on the seq2seq run (``--quantize quantize``), per
    beam and per number of batches decoded at once (decode.workers: 1, and one per thread)."""
    suffix = "" if quantize == "none" else f"-{quantize}"
    out = work / "seq2seq" / f"bench-decode{suffix}.json"
    run_measured([sys.executable, str(ROOT / "scripts" / "bench.py"),
                  "--run", str(work / "seq2seq" / DECODED_MODEL), "--sentences", str(sentences),
                  "--beams", ",".join(map(str, BEAMS)), "--batch-sizes", str(DECODE_BATCH),
                  "--fixed-length", str(FIXED_LENGTH), "--json", str(out),
                  "--quantize", quantize,
                  "--workers", ",".join(map(str, sorted({1, threads})))],
                 work / "logs" / f"seq2seq-decode{suffix}.log", cwd=ROOT)
    speeds: dict[int, dict[int, float]] = {}
    for r in json.loads(out.read_text()):
        if "beam" in r:
            speeds.setdefault(r["beam"], {})[r["workers"]] = r["out tok/s"]
    return speeds


def bench_decoding(peers: Peers, work: Path, threads: int) -> list[dict]:
    print(f"decoding {TEST_SPLIT} with the {DECODED_MODEL}s: seq2seq, OpenNMT-py, CTranslate2",
          flush=True)
    model = onmt_model(work)
    test_src = model.with_name("test.src")
    sentences = len(test_src.read_text(encoding="utf-8").splitlines())
    ours = decode_seq2seq(work, sentences, threads)
    # where the CPU has bf16 arithmetic, seq2seq's bf16 products too (CTranslate2 has no bf16
    # on a CPU: it stays in fp32)
    bf16 = decode_seq2seq(work, sentences, threads, "bf16") if cpu_has_bf16() else None
    onmt = decode_onmt(peers, model, test_src, work)
    ct2 = decode_ct2(peers, model, test_src, work, threads)
    steps = sentences * FIXED_LENGTH

    def seq2seq_at_best(speeds: dict[int, float], ct2_rate: float, suffix: str = "") -> dict:
        at = max(speeds, key=speeds.get)  # the faster layout
        return {f"seq2seq{suffix}": speeds[at], f"seq2seq{suffix}_layout": layout(at, threads),
                f"seq2seq{suffix}_all": {layout(k, threads): v for k, v in speeds.items()},
                f"ratio_ct2{suffix}": speeds[at] / ct2_rate}

    rows = []
    for beam in BEAMS:  # each tool at its faster layout of the same threads
        ct2_at = min(ct2[beam], key=ct2[beam].get)
        ct2_rate = steps / ct2[beam][ct2_at]
        rows.append({"model": DECODED_MODEL, "beam": beam, "batch": DECODE_BATCH,
                     "sentences": sentences, "onmt": steps / onmt[beam],
                     "ct2": ct2_rate, "ct2_layout": layout(ct2_at, threads),
                     "ct2_all": {layout(k, threads): steps / v for k, v in ct2[beam].items()},
                     **seq2seq_at_best(ours[beam], ct2_rate)})
        if bf16 is not None:
            rows[-1].update(seq2seq_at_best(bf16[beam], ct2_rate, "_bf16"))
    return rows


def layout(batches: int, threads: int) -> str:
    """How a tool spent its threads: batches decoded at once x threads each."""
    return f"{batches}x{max(1, threads // batches)}"


# --------------------------------------------------------------------------------------------
# Report


def markdown(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    lines = ["| " + " | ".join(h.ljust(w) for h, w in zip(header, widths)) + " |",
             "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    lines += ["| " + " | ".join(c.ljust(w) if i == 0 else c.rjust(w)
                                for i, (c, w) in enumerate(zip(r, widths))) + " |" for r in rows]
    return "\n".join(lines)


def count(v: float | None) -> str:
    return "?" if v is None else f"{v:,.0f}"


def training_table(rows: list[dict]) -> str:
    header = ["model", "params seq2seq", "params OpenNMT-py", "seq2seq tgt tok/s",
              "OpenNMT-py tgt tok/s", "seq2seq / OpenNMT-py", "peak RSS seq2seq MiB",
              "peak RSS OpenNMT-py MiB"]
    several = any(r.get("rounds", 1) > 1 for r in rows)
    if several:
        header.append("each round's ratio")
    cells = [[f"{r['model']} ({r['seq2seq']['precision']})", count(r["seq2seq"]["params"]),
              count(r["onmt"]["params"]), count(r["seq2seq"]["tgt_tok_s"]),
              count(r["onmt"]["tgt_tok_s"]), f"{r['ratio']:.2f}",
              count(r["seq2seq"]["peak_rss_mib"]), count(r["onmt"]["peak_rss_mib"])]
             + ([" / ".join(f"{x:.2f}" for x in r["round_ratios"])] if several else [])
             for r in rows]
    return markdown(header, cells)


def decoding_table(rows: list[dict]) -> str:
    header = ["model", "beam", "seq2seq tgt tok/s", "OpenNMT-py tgt tok/s",
              "CTranslate2 tgt tok/s", "seq2seq / CTranslate2"]
    bf16 = any("seq2seq_bf16" in r for r in rows)
    if bf16:
        header += ["seq2seq --quantize bf16 tgt tok/s", "bf16 / CTranslate2"]
    cells = [[r["model"], str(r["beam"]), f"{count(r['seq2seq'])} ({r['seq2seq_layout']})",
              count(r["onmt"]), f"{count(r['ct2'])} ({r['ct2_layout']})",
              f"{r['ratio_ct2']:.2f}"]
             + ([f"{count(r['seq2seq_bf16'])} ({r['seq2seq_bf16_layout']})",
                 f"{r['ratio_ct2_bf16']:.2f}"] if bf16 else []) for r in rows]
    return markdown(header, cells)


def headline(m: dict) -> str:
    torch = m["torch_seq2seq"] if m["torch_seq2seq"] == m["torch_peers"] else (
        f"{m['torch_seq2seq']} (seq2seq) / {m['torch_peers']} (peers)")
    return (f"torch {torch}, {m['threads_seq2seq']} threads (peers: {m['threads_peers']}), "
            f"CPU {m['cpu']} ({m['cores']} cores), AVX-512 bf16/AMX: "
            f"{'yes' if m['avx512_bf16_or_amx'] else 'no'}, load average "
            f"{m['load_at_start']:.2f} at the start")


# --------------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--workdir", type=Path, default=CACHE / "work",
                    help="runs, OpenNMT-py data and models, logs (default: %(default)s)")
    ap.add_argument("--venv", type=Path, default=CACHE / "venv",
                    help="the peers' virtual environment (default: %(default)s)")
    ap.add_argument("--data", type=Path, help="Multi30k directory (default: data/multi30k, "
                    "else ../shared/data/multi30k beside the repository)")
    ap.add_argument("--updates", type=int, default=100, help="training updates per tool")
    ap.add_argument("--only", choices=["train", "decode"], help="one half of the benchmark")
    ap.add_argument("--model", choices=list(MODELS), action="append",
                    help="train only this model (repeatable; default: both)")
    ap.add_argument("--rounds", type=int, default=1,
                    help="train each tool this many times, alternating which goes first; "
                    "rates are the medians over the rounds (default: %(default)s)")
    ap.add_argument("--json", type=Path, help="also write every number to this file")
    args = ap.parse_args()
    if args.rounds < 1:
        ap.error("--rounds must be at least 1")
    if args.updates < WARMUP_UPDATES + LOG_EVERY:
        ap.error(f"--updates must be at least {WARMUP_UPDATES + LOG_EVERY}")
    if args.data is None:
        local = ROOT / "data" / "multi30k"
        args.data = local if local.exists() else ROOT.parent / "shared" / "data" / "multi30k"
    args.workdir, args.data = args.workdir.resolve(), args.data.resolve()
    return args


def main() -> int:
    args = parse_args()
    t0 = time.perf_counter()
    peers = ensure_venv(args.venv)
    machine = machine_facts(peers)
    print(headline(machine), flush=True)
    training = [] if args.only == "decode" else bench_training(
        peers, args.workdir, args.data, args.updates, args.model, args.rounds)
    decoding = [] if args.only == "train" else bench_decoding(
        peers, args.workdir, machine["threads_peers"])
    wall = time.perf_counter() - t0
    print(f"\n{headline(machine)}; {os.getloadavg()[0]:.2f} at the end")
    if training:
        rounds = (f", median of {args.rounds} rounds (each round's ratio in the last column)"
                  if args.rounds > 1 else "")
        print(f"\nTraining, {args.updates} updates, target tokens/s after update "
              f"{WARMUP_UPDATES}{rounds}\n" + training_table(training))
    if decoding:
        print(f"\nDecoding {TEST_SPLIT}, {DECODE_BATCH} sentences a batch, every output "
              f"{FIXED_LENGTH} steps; each tool at the faster of its two layouts of "
              f"{machine['threads_peers']} threads (batches at once x threads each)\n"
              + decoding_table(decoding))
    print(f"\ntotal wall time {wall / 60:.1f} min")
    if args.json:
        machine["load_at_end"] = os.getloadavg()[0]
        args.json.write_text(json.dumps(
            {"machine": machine, "peer_requirements": [TORCH_REQUIREMENT, ONMT_REQUIREMENT,
                                                       *PEER_REQUIREMENTS],
             "training": training, "decoding": decoding, "wall_s": wall}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

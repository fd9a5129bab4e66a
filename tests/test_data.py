import gzip
import json
import os
import socket
import subprocess
import sys

import datasets
import pytest
from conftest import PAIRS, write_parallel
from huggingface_hub import constants as hub_constants

import seq2seq.data as data_module
from seq2seq.config import DataConfig
from seq2seq.data import load_split, split_name
from seq2seq.errors import DataError


@pytest.mark.parametrize("gz", [False, True])
def test_local_directory(tmp_path, gz):
    write_parallel(tmp_path, "train", PAIRS, gz=gz)
    ds = load_split(DataConfig(path=str(tmp_path)), "train")
    assert ds["src"] == [p[0] for p in PAIRS]
    assert ds["tgt"] == [p[1] for p in PAIRS]


def test_the_file_formats_leave_hugging_face_datasets_unimported(tmp_path):
    # `datasets` brings about 100 MB of libraries (Arrow, pandas) into a process: only the hub
    # needs it, so training and evaluation on files never import it.
    write_parallel(tmp_path, "train", PAIRS)
    code = ("import sys, seq2seq.training, seq2seq.evaluate, seq2seq.reproduce\n"
            "from seq2seq.config import DataConfig\nfrom seq2seq.data import load_split\n"
            f"split = load_split(DataConfig(path={str(tmp_path)!r}), 'train')\n"
            "assert len(split) == len(split['src']) > 0\n"
            "print(sorted(m for m in ('datasets', 'pandas', 'pyarrow') if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-1000:]
    assert r.stdout.strip() == "[]"


def test_local_direction_is_a_config_line(tmp_path):
    write_parallel(tmp_path, "train", PAIRS)
    ds = load_split(DataConfig(path=str(tmp_path), src_lang="en", tgt_lang="de"), "train")
    assert ds["src"][0] == PAIRS[0][1]


def test_tsv(tmp_path):
    lines = ["en\tde"] + [f"{t}\t{s}" for s, t in PAIRS]
    (tmp_path / "train.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    ds = load_split(DataConfig(format="tsv", path=str(tmp_path)), "train")
    assert ds["src"] == [p[0] for p in PAIRS]  # quotes kept as text
    assert ds["tgt"] == [p[1] for p in PAIRS]


@pytest.mark.parametrize("nested", [True, False])
def test_jsonl(tmp_path, nested):
    with (tmp_path / "val.jsonl").open("w", encoding="utf-8") as f:
        for s, t in PAIRS:
            rec = {"translation": {"de": s, "en": t}} if nested else {"de": s, "en": t, "id": 1}
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
    ds = load_split(DataConfig(format="jsonl", path=str(tmp_path)), "val")
    assert list(zip(ds["src"], ds["tgt"])) == PAIRS


def test_hub_loader_on_a_local_dataset_repo(tmp_path):
    """The hub path calls datasets.load_dataset(name, config, split); a local dataset directory
    in the hub layout goes through the same call without a network."""
    repo = tmp_path / "multi30k_like"
    repo.mkdir()
    records = [{"translation": {"de": s, "en": t}} for s, t in PAIRS]
    datasets.Dataset.from_list(records).to_json(repo / "train.jsonl")
    ds = load_split(DataConfig(format="hub", path=str(repo)), "train")
    assert list(zip(ds["src"], ds["tgt"])) == PAIRS


def test_hub_unreachable_gives_one_clear_line(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True, raising=False)
    with pytest.raises(DataError) as e:
        load_split(DataConfig(format="hub", path="no-such-user/no-such-dataset-xyz"), "train")
    msg = str(e.value)
    assert "\n" not in msg and "data.format: local" in msg


def test_missing_directory_and_files(tmp_path):
    with pytest.raises(DataError, match="data directory not found: .*nope"):
        load_split(DataConfig(path=str(tmp_path / "nope")), "train")
    with pytest.raises(DataError, match=r"file not found: .*train\.de"):
        load_split(DataConfig(path=str(tmp_path)), "train")


def test_unparallel_files_are_rejected(tmp_path):
    write_parallel(tmp_path, "train", PAIRS)
    (tmp_path / "train.en").write_text("only one line\n")
    with pytest.raises(DataError, match="not a parallel corpus"):
        load_split(DataConfig(path=str(tmp_path)), "train")


def test_missing_columns(tmp_path):
    (tmp_path / "train.jsonl").write_text(json.dumps({"fr": "x", "en": "y"}) + "\n")
    with pytest.raises(DataError, match="no columns 'de' and 'en'"):
        load_split(DataConfig(format="jsonl", path=str(tmp_path)), "train")


def test_split_aliases():
    cfg = DataConfig()
    assert split_name(cfg, "test") == "test_2016_flickr"
    assert split_name(cfg, "valid") == split_name(cfg, "val") == "val"
    assert split_name(cfg, "test_2017_flickr") == "test_2017_flickr"


def test_multi30k_layout(multi30k):
    ds = load_split(DataConfig(path=str(multi30k)), "val")
    assert len(ds) == 1014


# --- malformed local files: one line naming the file, the line and the fault ---------------


def _error(fmt: str, directory, split: str = "train") -> str:
    with pytest.raises(DataError) as e:
        load_split(DataConfig(format=fmt, path=str(directory)), split)
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def _write(path, lines: list[str | bytes], gz: bool = False) -> None:
    data = b"".join((x if isinstance(x, bytes) else x.encode("utf-8")) + b"\n" for x in lines)
    if gz:
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)


TSV_ROWS = ["de\ten"] + [f"{s}\t{t}" for s, t in PAIRS]  # lines 1-4


@pytest.mark.parametrize(
    "bad, expected",
    [
        ("Ein\tHund läuft.\tA dog runs.",
         "3 tab-separated fields, the header has 2 (a tab inside a sentence?)"),
        ("Nur ein Satz.", "1 tab-separated field, the header has 2"),
        ("a\tb\tc\td", "4 tab-separated fields, the header has 2"),
    ],
)
def test_tsv_row_with_the_wrong_number_of_fields(tmp_path, bad, expected):
    path = tmp_path / "train.tsv"
    _write(path, TSV_ROWS[:3] + [bad] + TSV_ROWS[3:])
    assert _error("tsv", tmp_path).startswith(f"{path}:4: {expected}")


@pytest.mark.parametrize(
    "header, missing",
    [("fr\ten", "'de'"), ("de\tfr", "'en'"), ("Ein Hund.\tA dog.", "'de'"), ("", "'de'")],
)
def test_tsv_header_without_the_language_columns(tmp_path, header, missing):
    path = tmp_path / "train.tsv"
    _write(path, [header] + TSV_ROWS[1:])
    msg = _error("tsv", tmp_path)
    assert msg.startswith(f"{path}:1: the header has no column {missing}")
    assert "the first line must name the columns, e.g. de<TAB>en" in msg


def test_tsv_empty_file_and_duplicate_column(tmp_path):
    path = tmp_path / "train.tsv"
    path.write_bytes(b"")
    assert _error("tsv", tmp_path).startswith(f"{path}: empty file")
    _write(path, ["de\ten\tde", "a\tb\tc"])
    assert _error("tsv", tmp_path) == f"{path}:1: the header names the column 'de' twice"


def test_tsv_blank_line_between_rows_is_an_error(tmp_path):
    path = tmp_path / "train.tsv"
    _write(path, TSV_ROWS[:2] + ["", "  "] + TSV_ROWS[2:])
    assert _error("tsv", tmp_path).startswith(f"{path}:3: empty line")


def test_tsv_valid_variants(tmp_path):
    """Extra columns are ignored, columns in any order, CRLF line ends, a byte-order mark,
    trailing blank lines, empty fields and quotes (text, not quoting) are all fine."""
    lines = ["\ufeffid\ten\tde \r"] + [f"{i}\t {t}\t{s}\r" for i, (s, t) in enumerate(PAIRS)]
    _write(tmp_path / "train.tsv", lines + ["7\t\t\"\r", "", ""])
    ds = load_split(DataConfig(format="tsv", path=str(tmp_path)), "train")
    assert list(zip(ds["src"], ds["tgt"])) == PAIRS + [('"', "")]


@pytest.mark.parametrize("fmt", ["tsv", "jsonl"])
def test_undecodable_utf8_names_the_line(tmp_path, fmt):
    path = tmp_path / f"train.{fmt}"
    if fmt == "tsv":
        _write(path, TSV_ROWS[:2] + [b"Kaputt\xff \xc3\xa4\tBroken"] + TSV_ROWS[2:])
    else:
        good = [json.dumps({"de": s, "en": t}) for s, t in PAIRS]
        _write(path, good[:2] + [b'{"de": "Kaputt\xff", "en": "Broken"}'] + good[2:])
    msg = _error(fmt, tmp_path)
    assert msg.startswith(f"{path}:3: not valid UTF-8 (byte 0xff at column ")


def test_gzipped_tsv_error_names_the_line(tmp_path):
    path = tmp_path / "train.tsv.gz"
    rows = TSV_ROWS + [f"Satz {i}.\tSentence {i}." for i in range(50)]
    _write(path, rows[:40] + ["zu\tviele\tFelder"] + rows[40:], gz=True)
    assert _error("tsv", tmp_path).startswith(f"{path}:41: 3 tab-separated fields")


def test_gzipped_tsv_that_is_fine(tmp_path):
    _write(tmp_path / "train.tsv.gz", TSV_ROWS, gz=True)
    ds = load_split(DataConfig(format="tsv", path=str(tmp_path)), "train")
    assert list(zip(ds["src"], ds["tgt"])) == PAIRS


def test_truncated_gzip_names_the_last_line_read(tmp_path):
    write_parallel(tmp_path, "train", [(f"Satz {i}.", f"Sentence {i}.") for i in range(3000)],
                   gz=True)
    path = tmp_path / "train.de.gz"
    path.write_bytes(path.read_bytes()[:-20])
    msg = _error("local", tmp_path)
    assert msg.startswith(f"{path}: cannot be read after line ")


def test_local_file_with_undecodable_utf8_names_the_line(tmp_path):
    write_parallel(tmp_path, "train", PAIRS)
    _write(tmp_path / "train.en", [b"A dog.", b"Two \xe4 men.", b"A woman."])
    path = tmp_path / "train.en"
    msg = _error("local", tmp_path)
    assert msg.startswith(f"{path}:2: not valid UTF-8 (byte 0xe4 at column 5)")


def _jsonl_error(tmp_path, bad: str, at: int = 3) -> str:
    good = [json.dumps({"translation": {"de": s, "en": t}}) for s, t in PAIRS]
    path = tmp_path / "train.jsonl"
    _write(path, good[: at - 1] + [bad] + good[at - 1 :])
    msg = _error("jsonl", tmp_path)
    assert msg.startswith(f"{path}:{at}: "), msg
    return msg[len(f"{path}:{at}: "):]


@pytest.mark.parametrize(
    "bad, expected",
    [
        ('{"de": "a" "en": "b"}', "not valid JSON (Expecting ',' delimiter at column 12)"),
        ('{"de": "a", "en": "b"', "not valid JSON (Expecting ',' delimiter at column 22)"),
        ('{"de": "a", "en": "b"} x', "not valid JSON (Extra data at column 24)"),
        ('["Ein Hund.", "A dog."]', "not a JSON object but an array"),
        ('"Ein Hund."', "not a JSON object but a string"),
        ('{"translation": {"de": "Ein Hund."}}', 'no "en" field in the "translation" object'),
        ('{"translation": null}', '"translation" is null, not a JSON object'),
        ('{"translation": ["a", "b"]}', '"translation" is an array, not a JSON object'),
        ('{"en": "A dog.", "fr": "Un chien."}', "no 'translation' column and no columns 'de' and"),
        ('{"de": 17, "en": "seventeen"}', 'the "de" field of the record is a number, not a'),
        ('{"translation": {"de": "x", "en": ["y"]}}',
         'the "en" field of the "translation" object is an array'),
        ('{"de": true, "en": "x"}', 'the "de" field of the record is a boolean'),
    ],
)
def test_jsonl_malformed_line(tmp_path, bad, expected):
    assert _jsonl_error(tmp_path, bad).startswith(expected)


def test_jsonl_valid_variants(tmp_path):
    """Blank lines are skipped, null reads as "", other fields are ignored, a byte-order mark and
    CRLF line ends are fine, and the two record shapes may mix."""
    lines = [
        '\ufeff{"translation": {"de": " Ein Hund. ", "en": "A dog.", "fr": 3}}\r',
        "",
        '{"de": "Zwei.", "en": null, "id": [1, 2]}',
        "   ",
        '{"id": 3, "de": "Drei.", "en": "Three."}',
        "",
    ]
    _write(tmp_path / "train.jsonl", lines)
    ds = load_split(DataConfig(format="jsonl", path=str(tmp_path)), "train")
    assert list(zip(ds["src"], ds["tgt"])) == [("Ein Hund.", "A dog."), ("Zwei.", ""),
                                               ("Drei.", "Three.")]


# --- the hub: no network means offline mode at once ------------------------------------------

OFFLINE_VARS = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")


@pytest.fixture
def hub_env(monkeypatch):
    """A private environment (no offline variables, endpoint or proxies) and offline flags, both
    restored after the test whatever the loader sets."""
    env = {
        k: v for k, v in os.environ.items()
        if k not in OFFLINE_VARS and k != "HF_ENDPOINT" and not k.lower().endswith("_proxy")
    }
    monkeypatch.setattr(os, "environ", env)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", False)
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", False)
    return env


@pytest.fixture
def fake_hub(monkeypatch):
    """``datasets.load_dataset`` replaced: it records the offline state it saw, and raises
    ``ConnectionError`` in offline mode unless ``cached`` is set."""
    state = {"cached": False, "seen": [], "probes": [], "reachable": False}

    def load_dataset(path, name=None, split=None, streaming=False):
        seen = {v: os.environ.get(v) for v in OFFLINE_VARS}
        seen["datasets.config"] = datasets.config.HF_HUB_OFFLINE
        seen["huggingface_hub.constants"] = hub_constants.HF_HUB_OFFLINE
        state["seen"].append(seen)
        if datasets.config.HF_HUB_OFFLINE and not state["cached"]:
            raise ConnectionError("Couldn't reach the hub (offline mode is enabled)")
        return datasets.Dataset.from_list([{"translation": {"de": s, "en": t}} for s, t in PAIRS])

    def probe(address, timeout=data_module.HUB_PROBE_TIMEOUT):
        state["probes"].append(address)
        return state["reachable"]

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    monkeypatch.setattr(data_module, "_hub_reachable", probe)
    return state


HUB_CFG = DataConfig(format="hub", path="bentrevett/multi30k")
OFFLINE_SEEN = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "datasets.config": True,
                "huggingface_hub.constants": True}


def test_hub_unreachable_fails_fast_in_offline_mode(hub_env, fake_hub):
    with pytest.raises(DataError) as e:
        load_split(HUB_CFG, "train")
    assert fake_hub["probes"] == [("huggingface.co", 443)]
    assert fake_hub["seen"] == [OFFLINE_SEEN]
    msg = str(e.value)
    assert "\n" not in msg and "data.format: local" in msg
    assert "hub (huggingface.co:443) cannot be reached and it is not cached" in msg


def test_hub_unreachable_still_loads_from_the_cache(hub_env, fake_hub, capsys):
    fake_hub["cached"] = True
    ds = load_split(HUB_CFG, "train")
    assert list(zip(ds["src"], ds["tgt"])) == PAIRS
    assert fake_hub["seen"] == [OFFLINE_SEEN]
    assert "loaded 'bentrevett/multi30k' from the local cache" in capsys.readouterr().err


def test_hub_reachable_stays_online(hub_env, fake_hub):
    fake_hub["reachable"] = True
    load_split(HUB_CFG, "train")
    assert fake_hub["probes"] == [("huggingface.co", 443)]
    assert fake_hub["seen"] == [{"HF_HUB_OFFLINE": None, "HF_DATASETS_OFFLINE": None,
                                 "datasets.config": False, "huggingface_hub.constants": False}]


@pytest.mark.parametrize("var, value", [("HF_HUB_OFFLINE", "0"), ("HF_DATASETS_OFFLINE", "1")])
def test_hub_no_probe_when_the_user_chose_a_mode(hub_env, fake_hub, var, value):
    hub_env[var] = value
    fake_hub["cached"] = True
    load_split(HUB_CFG, "train")
    assert fake_hub["probes"] == []


def test_hub_no_probe_for_a_local_dataset_directory(hub_env, fake_hub, tmp_path):
    load_split(DataConfig(format="hub", path=str(tmp_path)), "train")
    assert fake_hub["probes"] == []


def test_hub_probe_address(hub_env):
    assert data_module._hub_address() == ("huggingface.co", 443)
    hub_env["HF_ENDPOINT"] = "http://hf-mirror.example:8080/"
    assert data_module._hub_address() == ("hf-mirror.example", 8080)
    hub_env["HF_ENDPOINT"] = "https://hf-mirror.example"
    hub_env["HTTPS_PROXY"] = "http://proxy.example:3128"
    assert data_module._hub_address() == ("proxy.example", 3128)
    hub_env["NO_PROXY"] = ".example"
    assert data_module._hub_address() == ("hf-mirror.example", 443)


def test_hub_probe_is_a_tcp_connect():
    """On the loopback interface only: a listening port is reachable, a closed one is not."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        address = server.getsockname()
        assert data_module._hub_reachable(address, timeout=2.0)
    assert not data_module._hub_reachable(address, timeout=2.0)

import json

import datasets
import pytest
from conftest import PAIRS, write_parallel

from seq2seq.config import DataConfig
from seq2seq.data import load_split, split_name
from seq2seq.errors import DataError


@pytest.mark.parametrize("gz", [False, True])
def test_local_directory(tmp_path, gz):
    write_parallel(tmp_path, "train", PAIRS, gz=gz)
    ds = load_split(DataConfig(path=str(tmp_path)), "train")
    assert ds["src"] == [p[0] for p in PAIRS]
    assert ds["tgt"] == [p[1] for p in PAIRS]


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

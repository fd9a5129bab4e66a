"""data.fetch: Multi30k fetched into a missing data directory, from a local copy or the network."""

from __future__ import annotations

import gzip

import pytest

from seq2seq import download
from seq2seq.config import DataConfig
from seq2seq.data import load_split
from seq2seq.errors import DataError


@pytest.fixture
def copy(tmp_path):
    """A stand-in for ../shared/data/multi30k: every file of the layout, three lines each."""
    d = tmp_path / "shared"
    d.mkdir()
    for name in download.FILES:
        lang = name.split(".")[1]
        d.joinpath(name).write_bytes(gzip.compress(f"{lang} 1\n{lang} 2\n{lang} 3\n".encode()))
    return d


def test_a_missing_directory_is_filled_from_the_local_copy(tmp_path, copy, monkeypatch, capsys):
    monkeypatch.setattr(download, "local_copies", lambda: [tmp_path / "nowhere", copy])
    monkeypatch.setattr(download, "_download", lambda *a: pytest.fail("no copy needs network"))
    cfg = DataConfig(path=str(tmp_path / "data" / "multi30k"), fetch="multi30k")
    ds = load_split(cfg, "val")
    assert ds["src"] == ["de 1", "de 2", "de 3"] and ds["tgt"] == ["en 1", "en 2", "en 3"]
    assert sorted(p.name for p in (tmp_path / "data" / "multi30k").iterdir()) == sorted(
        download.FILES)
    assert f"fetching Multi30k into {tmp_path / 'data' / 'multi30k'} from {copy}" in (
        capsys.readouterr().err)


def test_downloaded_when_there_is_no_copy(tmp_path, monkeypatch):
    monkeypatch.setattr(download, "local_copies", lambda: [tmp_path / "nowhere"])
    urls = []

    def fake(url, path):
        urls.append(url)
        path.write_bytes(gzip.compress(b"x\n"))

    monkeypatch.setattr(download, "_download", fake)
    download.fetch_multi30k(tmp_path / "m", progress=False)
    assert len(urls) == len(download.FILES)
    assert urls[0] == download.URL.format(name=download.FILES[0])


def test_offline_without_a_copy_is_one_line_and_leaves_no_part(tmp_path, monkeypatch):
    monkeypatch.setattr(download, "local_copies", lambda: [tmp_path / "nowhere"])
    calls = []

    def offline(url, path):
        calls.append(url)
        if len(calls) == 2:  # the second file fails half-way
            path.write_bytes(b"partial")
            raise OSError("[Errno 101] Network is unreachable")
        path.write_bytes(gzip.compress(b"x\n"))

    monkeypatch.setattr(download, "_download", offline)
    cfg = DataConfig(path=str(tmp_path / "m"), fetch="multi30k")
    with pytest.raises(DataError) as e:
        load_split(cfg, "train")
    msg = str(e.value)
    assert "\n" not in msg and "Network is unreachable" in msg and "make data" in msg
    assert not list((tmp_path / "m").glob("*.part"))
    assert len(list((tmp_path / "m").glob("*.gz"))) == 1  # finished files are kept


def test_no_fetch_without_data_fetch(tmp_path, monkeypatch):
    monkeypatch.setattr(download, "fetch_multi30k", lambda *a, **k: pytest.fail("fetched"))
    with pytest.raises(DataError, match="data directory not found"):
        load_split(DataConfig(path=str(tmp_path / "m")), "train")

"""The data-format registry: one registration in this file is all a new format needs to be
accepted by the config and read by ``load_records``."""

from __future__ import annotations

import csv
import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from uaclm_dist.config import ConfigError, DataConfig, load_config
from uaclm_dist.data import DATA_FORMATS, DataError, DataFormat, QARecord, load_records
from uaclm_dist.data.records import RecordCollector


def read_test_csv(path: str | Path, stats: Counter | None = None) -> list[QARecord]:
    """``question,answer`` rows with a header; rows located as ``"row N"`` (from 1)."""
    rows = RecordCollector(path, "test_csv")
    with open(path, newline="", encoding="utf-8") as handle:
        for number, row in enumerate(csv.DictReader(handle), start=1):
            if not row.get("answer"):
                raise rows.error(f"row {number}", "empty answer")
            rows.add(f"row {number}", id=f"{Path(path).stem}-{number}", question=row["question"],
                     answers=(row["answer"],))
    return rows.records


@pytest.fixture
def test_csv() -> Iterator[DataFormat]:
    """The ``test_csv`` format, registered for one test."""
    fmt = DATA_FORMATS.register(DataFormat("test_csv", read_test_csv, suffixes=(".csv",)))
    yield fmt
    DATA_FORMATS.unregister("test_csv")


def write_csv(path: Path, rows: list[tuple[str, str]]) -> Path:
    path.write_text("question,answer\n" + "".join(f"{q},{a}\n" for q, a in rows))
    return path


def test_a_format_registered_in_a_test_file_loads_through_load_records(tmp_path, test_csv):
    (tmp_path / "qa").mkdir()
    write_csv(tmp_path / "qa" / "a.csv", [("Capital of France?", "Paris"), ("2+2?", "4")])
    write_csv(tmp_path / "qa" / "b.csv", [("Largest planet?", "Jupiter")])
    (tmp_path / "qa" / "notes.txt").write_text("not data")
    records = load_records(DataConfig(format="test_csv", paths=[str(tmp_path / "qa")]))
    assert [(r.question, r.answers) for r in records] == [
        ("Capital of France?", ("Paris",)), ("2+2?", ("4",)), ("Largest planet?", ("Jupiter",)),
    ]  # fmt: skip
    assert len(load_records(DataConfig(format="test_csv", paths=[str(tmp_path / "qa/*.csv")],
                                       max_examples=2))) == 2


def test_a_registered_format_is_a_valid_config_value(tmp_path, test_csv):
    (tmp_path / "ds.json").write_text(json.dumps({"zero_optimization": {"stage": 2}}))
    data = write_csv(tmp_path / "qa.csv", [("q?", "a")])
    config = tmp_path / "run.yaml"
    config.write_text("distributed:\n  deepspeed_config: ds.json\n"
                      f"data:\n  format: test_csv\n  paths: [{data.name}]\n")
    cfg = load_config(config)
    assert cfg.data.format == "test_csv" and cfg.data.paths == [str(data.resolve())]
    assert [r.answers for r in load_records(cfg.data)] == [("a",)]
    with pytest.raises(ConfigError, match=r"data\.paths is empty but data\.format 'test_csv' reads "
                       "local files"):
        load_config(config, ["data.paths=[]"])


def test_errors_of_a_registered_format_name_file_and_row(tmp_path, test_csv):
    bad = write_csv(tmp_path / "bad.csv", [("q1?", "a1"), ("q2?", "")])
    with pytest.raises(DataError, match=r"bad\.csv.*row 2.*empty answer"):
        load_records(DataConfig(format="test_csv", paths=[str(bad)]))
    with pytest.raises(DataError, match="field_map is only used by the jsonl/parquet/hf formats, "
                       "not 'test_csv'"):
        load_records(DataConfig(format="test_csv", paths=[str(bad)], field_map={"id": "x"}))


def test_unregistered_format_is_refused():
    assert "test_csv" not in DATA_FORMATS
    with pytest.raises(ValueError, match="unknown data format 'test_csv'"):
        DataConfig(format="test_csv", paths=["x.csv"])


def test_built_in_formats_and_their_flags():
    assert DATA_FORMATS.names()[:11] == ("coqa", "triviaqa", "squad", "bioasq", "okvqa",
                                         "fanoutqa", "easyvqa", "arithmetic", "jsonl", "parquet",
                                         "hf")  # fmt: skip
    assert [f.name for f in DATA_FORMATS.values() if f.packaged] == ["fanoutqa", "easyvqa",
                                                                     "arithmetic"]
    assert [f.name for f in DATA_FORMATS.values() if f.uses_field_map] == ["jsonl", "parquet",
                                                                          "hf"]
    assert DATA_FORMATS.get("hf").suffixes is None and DATA_FORMATS.get("easyvqa").suffixes is None
    with pytest.raises(ValueError, match="already registered"):
        DATA_FORMATS.register(DataFormat("coqa", read_test_csv))

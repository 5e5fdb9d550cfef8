"""Bad input (issue 13): every case of ``bad_input_cases.CASES`` exits 2 with one message that
names the field, file, row or flag, starts no Ray, and leaves every file where it was.

Each case runs ``uaclm_dist.cli.main`` in this process. Ray is guarded twice: ``ray.init`` and
``uaclm_dist.cluster.ray_init`` fail the test when called, and Ray must not be initialized
afterwards. The README's "Bad input" table is generated from the same cases.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest
from bad_input_cases import CASES, Case, markdown_table

from uaclm_dist import cli
from uaclm_dist.config import REPO_ROOT

#: The first line of a usage error (argparse) or of a bad-input message.
ERROR_LINE = re.compile(r"^uaclm(?: [\w-]+)*: error: ", re.MULTILINE)


def snapshot(folder: Path) -> dict[str, bytes | None]:
    """Every file (its bytes) and folder (None) under ``folder``."""
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None)
            for p in sorted(folder.rglob("*"))}  # fmt: skip


@pytest.fixture
def no_ray(monkeypatch, tmp_path_factory):
    """Fail on any attempt to start or join Ray; no RAY_ADDRESS; a Ray temp dir of our own, so
    that no `ray start` cluster of this machine (another test's) is joined."""
    import ray

    import uaclm_dist.cluster

    def refuse(*args, **kwargs):
        raise AssertionError("Ray was started for bad input")

    monkeypatch.setattr(ray, "init", refuse)
    monkeypatch.setattr(uaclm_dist.cluster, "ray_init", refuse)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path_factory.mktemp("ray_tmp")))
    assert not ray.is_initialized()
    yield
    assert not ray.is_initialized()


def test_the_cases_cover_every_category_at_least_30_times():
    counts = Counter(case.category for case in CASES)
    assert len(CASES) >= 30 and set(counts) == {"config", "data", "cli", "cluster"}, counts
    assert len({case.id for case in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input(case: Case, tmp_path, capsys, monkeypatch, no_ray):
    if case.build:
        case.build(tmp_path)
    for key, value in case.env:
        monkeypatch.setenv(key, value.replace("{tmp}", str(tmp_path)))
    before = snapshot(tmp_path)
    capsys.readouterr()

    code = cli.main(case.command(tmp_path))

    out, err = capsys.readouterr()
    assert code == case.exit_code, (code, out, err)
    assert "Traceback" not in err and "Traceback" not in out, err
    starts = [m.start() for m in ERROR_LINE.finditer(err)]
    assert len(starts) == 1, f"expected one error message, got:\n{err}"
    usage = err[: starts[0]]
    assert not usage.strip() or usage.startswith("usage: uaclm"), err  # argparse's usage only
    message = err[starts[0]:]
    assert "problems in the configuration" not in message, message
    assert re.search(case.message, message, re.DOTALL), f"{case.message!r} not in:\n{message}"
    assert snapshot(tmp_path) == before, "bad input changed, added or removed files"


def test_readme_holds_the_current_table():
    readme = (REPO_ROOT / "README.md").read_text()
    assert markdown_table() in readme, (
        "regenerate the README's Bad input table: PYTHONPATH=. python "
        "tests/unit/bad_input_cases.py"
    )

"""Stopping `uaclm eval` (evaluate/stopping.py, evaluate/method_files.py, runner._generate):
the first signal abandons the method being generated when its next batch arrives and keeps
the finished ones, a second interrupts at once; a per-method parquet is in place only when
whole; running the same evaluation again reuses finished methods and refuses ones made with
other settings. The Ray pipeline is replaced by a fake here; tests/integration/
test_evaluation.py stops and resumes the real one."""

from __future__ import annotations

import json
import os
import signal
from contextlib import nullcontext
from pathlib import Path

import pandas as pd
import pytest

from uaclm_dist.config import ConfigError, load_config
from uaclm_dist.evaluate import runner
from uaclm_dist.evaluate.method_files import (
    finished_method,
    method_fingerprint,
    paths,
    write_method,
)
from uaclm_dist.evaluate.stopping import EvaluationStopped, StopSignals
from uaclm_dist.exit_codes import CommandStopped

REPO = Path(__file__).resolve().parents[2]


def test_first_signal_is_recorded_second_interrupts_and_handlers_come_back():
    before = signal.getsignal(signal.SIGTERM)
    with StopSignals() as stop:
        stop.raise_if_requested()  # no signal yet: no-op
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.received == "SIGTERM"
        with pytest.raises(EvaluationStopped, match="SIGTERM received"):
            stop.raise_if_requested()
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGUSR1)
    assert signal.getsignal(signal.SIGTERM) is before
    assert issubclass(EvaluationStopped, CommandStopped)


def fingerprint(name="base", seed=0, rows=None):
    rows = rows or [{"id": "q1", "prompt_ids": [1, 2]}]
    return method_fingerprint(name, None, model={"name_or_path": "m"}, eval_settings={"t": 1.0},
                              seed=seed, prompt_rows=rows)  # fmt: skip


def test_a_written_method_is_reused_only_with_the_same_fingerprint(tmp_path):
    assert finished_method(tmp_path, fingerprint()) is None
    df = pd.DataFrame({"id": ["q1"], "te": [0.5], "sample_texts": [["a", "b"]]})
    parquet = write_method(tmp_path, fingerprint(), df)
    assert finished_method(tmp_path, fingerprint()) == parquet
    assert not list(tmp_path.rglob("*.partial"))
    back = pd.read_parquet(parquet)
    assert list(back["id"]) == ["q1"] and list(back["sample_texts"][0]) == ["a", "b"]
    with pytest.raises(ConfigError, match=r"base.parquet was made by another evaluation \(seed: 0 "
                                          r"there, 1 now\)"):  # fmt: skip
        finished_method(tmp_path, fingerprint(seed=1))
    with pytest.raises(ConfigError, match="prompts_sha256"):
        finished_method(tmp_path, fingerprint(rows=[{"id": "q2", "prompt_ids": [1, 2]}]))
    paths(tmp_path, "base")[1].unlink()
    with pytest.raises(ConfigError, match="has no readable fingerprint"):
        finished_method(tmp_path, fingerprint())


def test_adapter_files_are_part_of_the_fingerprint(tmp_path):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_model.safetensors").write_bytes(b"one")
    kwargs = dict(model={}, eval_settings={}, seed=0, prompt_rows=[])
    first = method_fingerprint("a", adapter, **kwargs)
    (adapter / "adapter_model.safetensors").write_bytes(b"two")
    assert method_fingerprint("a", adapter, **kwargs) != first


ROWS = [{"id": f"q{i}", "question": "?", "references": ["x"], "prompt_ids": [1, i],
         "is_ood": False} for i in range(6)]  # fmt: skip


class FakePipeline:
    """run_pipeline's stand-in: three batches of two rows; a SIGTERM arrives in method
    ``stop_in``'s second batch, as from `scancel` or Slurm's pre-timeout signal."""

    def __init__(self, stop_in: str | None):
        self.stop_in = stop_in
        self.calls: list[str | None] = []

    def __call__(self, rows, *, model_cfg, adapter_dir, eval_cfg, seed, on_rows, should_stop):
        self.calls.append(adapter_dir)
        for b in range(3):
            on_rows(2)
            if adapter_dir == self.stop_in and b == 1:
                os.kill(os.getpid(), signal.SIGTERM)
            should_stop()
        return pd.DataFrame({"id": [r["id"] for r in rows], "te": [0.1] * len(rows)})


@pytest.fixture
def fake_ray(monkeypatch):
    import uaclm_dist.cluster
    import uaclm_dist.evaluate.pipeline

    monkeypatch.setattr(uaclm_dist.cluster, "ray_session", lambda cfg, quiet: nullcontext())

    def install(fake):
        monkeypatch.setattr(uaclm_dist.evaluate.pipeline, "run_pipeline", fake)

    return install


def test_a_stop_keeps_finished_methods_and_the_same_command_finishes_the_rest(tmp_path, fake_ray):
    cfg = load_config(REPO / "configs" / "tiny_test.yaml")
    methods = [("base", None), ("ua", tmp_path / "ua_adapter")]
    (tmp_path / "ua_adapter").mkdir()
    (tmp_path / "ua_adapter" / "adapter_model.safetensors").write_bytes(b"w")
    out = runner.prepare_eval_dir(tmp_path / "eval")
    prints = runner._fingerprints(cfg, methods, ROWS)
    fake = FakePipeline(stop_in=str(tmp_path / "ua_adapter"))
    fake_ray(fake)
    with pytest.raises(EvaluationStopped, match=r"abandoned method 'ua'.*finished methods kept"):
        runner._generate(cfg, prints, methods, ROWS, out, verbose=True)
    assert (out / "per_example" / "base.parquet").exists()
    assert not (out / "per_example" / "ua.parquet").exists()
    assert not list(out.rglob("*.partial"))
    stopped = json.loads((out / runner.STOPPED_FILE).read_text())
    assert stopped["finished_methods"] == ["base"] and stopped["remaining_methods"] == ["ua"]
    assert "SIGTERM" in stopped["reason"]
    # again: base is read back, only ua is generated
    fake = FakePipeline(stop_in=None)
    fake_ray(fake)
    frames = runner._generate(cfg, prints, methods, ROWS, out, verbose=True)
    assert fake.calls == [str(tmp_path / "ua_adapter")]
    assert list(frames) == ["base", "ua"]
    assert list(frames["base"]["id"]) == [r["id"] for r in ROWS]
    # a finished method made with other settings is refused, not regenerated over
    other = runner._fingerprints(load_config(REPO / "configs" / "tiny_test.yaml",
                                             ["optim.seed=7"]), methods, ROWS)  # fmt: skip
    with pytest.raises(ConfigError, match="base.parquet was made by another evaluation"):
        runner._generate(cfg, other, methods, ROWS, out, verbose=True)

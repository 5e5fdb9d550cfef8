"""uaclm_dist.console: fd-level redirection into log files, the driver's terminal stream, which
forwarded Ray lines still reach the console, and the report of a failed training's ranks."""

from __future__ import annotations

import os
import subprocess
import sys
import types

import pytest

from uaclm_dist import console


def test_redirect_fds_catches_python_fd_and_child_process_output(tmp_path, capfd):
    log = tmp_path / "logs" / "rank0.log"
    print("before", file=sys.__stdout__, flush=True)
    with console.redirect_fds(log) as path:
        assert path == log
        print("python stdout", file=sys.__stdout__)  # buffered: flushed on exit
        print("python stderr", file=sys.__stderr__, flush=True)
        os.write(1, b"fd 1 (C++, DeepSpeed)\n")
        os.write(2, b"fd 2\n")
        subprocess.run([sys.executable, "-c", "import sys; print('child'); "
                        "print('child err', file=sys.stderr)"], check=True)  # fmt: skip
    os.write(1, b"after\n")
    text = log.read_text()
    for line in ("python stdout", "python stderr", "fd 1 (C++, DeepSpeed)", "fd 2", "child",
                 "child err"):  # fmt: skip
        assert line + "\n" in text
    assert "before" not in text and "after" not in text
    out, err = capfd.readouterr()
    assert out == "before\nafter\n" and err == ""


def test_redirect_fds_appends_and_restores_after_an_error(tmp_path, capfd):
    log = tmp_path / "driver.log"
    log.write_text("earlier attempt\n")
    with pytest.raises(RuntimeError), console.redirect_fds(log):
        os.write(2, b"last words\n")
        raise RuntimeError("worker failed")
    os.write(2, b"console again\n")
    assert log.read_text() == "earlier attempt\nlast words\n"
    assert capfd.readouterr().err == "console again\n"


def test_driver_output_quiet_sends_fds_to_the_log_and_keeps_a_terminal(tmp_path, capfd):
    with console.driver_output(tmp_path, verbose=False) as terminal:
        os.write(2, b"(TrainController pid=1) Requesting resources\n")
        assert os.environ["RAY_COLOR_PREFIX"] == "0"
        print("train: 50%", file=terminal)
    assert terminal.closed
    assert (tmp_path / console.DRIVER_LOG).read_text() == \
        "(TrainController pid=1) Requesting resources\n"  # fmt: skip
    assert capfd.readouterr().err == "train: 50%\n"


def test_driver_output_verbose_redirects_nothing(tmp_path, capfd):
    with console.driver_output(tmp_path, verbose=True) as terminal:
        assert terminal is sys.stderr
        os.write(2, b"shown\n")
    assert not (tmp_path / console.DRIVER_LOG).exists()
    assert capfd.readouterr().err == "shown\n"


@pytest.mark.parametrize("batch, expected", [
    ({"pid": 1234, "lines": ["Loading weights", "trainable 11264"]}, []),
    ({"pid": "raylet", "lines": ["A worker died or was killed", " "]},
     ["(raylet) A worker died or was killed"]),
    ({"pid": "autoscaler", "lines": ["======== Autoscaler status", ":event_summary:No node "
                                     "can fit {'GPU': 8}"]},
     ["(autoscaler) No node can fit {'GPU': 8}"]),
])  # fmt: skip
def test_cluster_notices_keep_raylet_lines_and_autoscaler_events_only(batch, expected):
    def events(lines):  # stands in for Ray's filter_autoscaler_events
        return [x.split(":event_summary:")[1] for x in lines if ":event_summary:" in x]

    assert console.cluster_notices(batch, events) == expected


def test_tail_collapses_progress_frames_and_skips_blank_lines(tmp_path):
    log = tmp_path / "rank1.log"
    log.write_text("one\n\nbar 10%\rbar 100%\n" + "".join(f"line {i}\n" for i in range(30)))
    assert console.tail(log, 3) == ["line 27", "line 28", "line 29"]
    assert console.tail(log)[0] == f"line {30 - console.TAIL_LINES}"
    assert console.tail(log, 32)[:2] == ["one", "bar 100%"]
    assert console.tail(tmp_path / "missing.log") == []


def test_failure_report_names_the_failed_ranks_logs_and_their_last_lines(tmp_path):
    console.rank_log(tmp_path, 0).write_text("step 1\n")
    console.rank_log(tmp_path, 1).write_text("step 1\nRuntimeError: CUDA out of memory\n")
    report = console.failure_report(tmp_path, [1])
    assert f"logs in {tmp_path}/" in report and console.DRIVER_LOG in report
    assert f"rank 1 failed; full log: {tmp_path / 'rank1.log'}, last 2 lines:" in report
    assert report.endswith("  | RuntimeError: CUDA out of memory")
    assert "rank 0" not in report
    every = console.failure_report(tmp_path, [])  # Ray named no rank: every rank's log
    assert "rank 0 failed" in every and "rank 1 failed" in every
    assert "rank 3 failed; full log:" in console.failure_report(tmp_path, [3])
    assert console.failure_report(tmp_path, [3]).endswith("(empty)")


def test_failed_ranks_reads_ray_trains_worker_failures():
    error = RuntimeError("Training failed due to worker errors")
    error.worker_failures = {2: ValueError(), 0: ValueError()}
    assert console.failed_ranks(error) == [0, 2]
    assert console.failed_ranks(RuntimeError("controller")) == []


def test_training_worker_output_and_traceback_go_to_its_rank_log(tmp_path, monkeypatch, capfd):
    from uaclm_dist.train import context as worker_context
    from uaclm_dist.train import worker

    class FailingWorker:
        first_step_done = False

        def __init__(self, plan, context):
            os.write(1, b"DeepSpeed built\n")

        def run(self):
            raise RuntimeError("boom on rank 1")

    def rank_one():
        return types.SimpleNamespace(rank=1, world_size=2, device=None)

    monkeypatch.setattr(worker_context, "RayTrainContext", rank_one)
    monkeypatch.setattr(worker, "TrainingWorker", FailingWorker)
    plan = types.SimpleNamespace(output_dir=str(tmp_path / "run"))
    (tmp_path / "run").mkdir()
    with pytest.raises(RuntimeError, match="boom on rank 1"):
        worker.train_loop_per_worker({"plan": plan, "log_dir": str(tmp_path)})
    # failed before its first step: recorded, so that Ray's restarts do not set up again
    assert (tmp_path / "run" / "setup_failed.rank1.json").exists()
    text = console.rank_log(tmp_path, 1).read_text()
    assert text.startswith("DeepSpeed built\n") and "RuntimeError: boom on rank 1" in text
    assert capfd.readouterr() == ("", "")

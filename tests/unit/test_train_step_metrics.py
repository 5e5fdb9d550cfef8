"""StepMetrics: one optimizer step's micro-batch diagnostics, whatever terms the objective has."""

from __future__ import annotations

import math

import pytest
import torch

from uaclm_dist.losses.types import TokenStats, loss_output
from uaclm_dist.train.step_metrics import StepMetrics


def _output(loss: float, entropy: list[float], correct: list[bool], with_entropy: bool = True,
            **terms: float):  # fmt: skip
    n = len(entropy)
    stats = TokenStats(
        entropy=torch.tensor(entropy, dtype=torch.float64) if with_entropy else None,
        log_prob_pred=torch.zeros(n, dtype=torch.float64),
        log_prob_label=torch.zeros(n, dtype=torch.float64),
        pred=torch.zeros(n, dtype=torch.long),
        valid=torch.ones(n, dtype=torch.bool),
        correct=torch.tensor(correct),
    )
    as_tensors = {k: torch.tensor(v, dtype=torch.float64) for k, v in terms.items()}
    return loss_output(torch.tensor(loss, dtype=torch.float64), stats, as_tensors)


def test_reduce_averages_losses_and_any_terms_and_weights_entropies_by_tokens():
    metrics = StepMetrics()
    metrics.add(_output(2.0, [1.0, 3.0], [True, False], clm=1.0, my_term=4.0))
    metrics.add(_output(4.0, [5.0], [True], clm=3.0, my_term=0.0))
    out = metrics.metrics(metrics.reduce().tolist())  # no process group: this rank alone
    assert out["loss"] == 3.0 and out["loss_clm"] == 2.0 and out["loss_my_term"] == 2.0
    assert (out["n_tokens"], out["n_correct"], out["n_incorrect"]) == (3.0, 2.0, 1.0)
    assert out["entropy_correct"] == pytest.approx(3.0)  # (1 + 5) / 2 correct tokens
    assert out["entropy_incorrect"] == pytest.approx(3.0)
    assert out["token_accuracy"] == pytest.approx(2 / 3)


def test_a_step_without_incorrect_tokens_reports_nan_not_zero():
    metrics = StepMetrics()
    metrics.add(_output(1.0, [0.5], [True]))
    out = metrics.metrics(metrics.reduce().tolist())
    assert math.isnan(out["entropy_incorrect"]) and out["n_incorrect"] == 0.0
    assert not any(k.startswith("loss_") for k in out)


def test_an_objective_without_entropy_logs_none_and_keeps_the_rest():
    """clm's kernel computes no entropy: the row has no entropy keys, not NaN or 0."""
    metrics = StepMetrics()
    metrics.add(_output(2.0, [1.0, 3.0], [True, False], with_entropy=False, clm=2.0))
    out = metrics.metrics(metrics.reduce().tolist())
    assert not any(k.startswith("entropy_") for k in out)
    assert out["loss_clm"] == 2.0 and out["token_accuracy"] == 0.5
    assert out["prob_correct"] == 1.0  # log P = 0 in the fixture

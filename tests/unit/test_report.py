"""The markdown + PNG report."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest

from uaclm_dist.evaluate.compare import compare_methods
from uaclm_dist.evaluate.report import write_report
from uaclm_dist.evaluate.summary import compute_metrics

SCORES = ["te", "ppl", "pe", "se", "dse", "length"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def method_frame(seed: int, signal: float, n: int = 240, n_ood: int = 40) -> pd.DataFrame:
    """A plausible per-example frame: uncertainty grows as ROUGE-L falls, plus OOD rows."""
    rng = np.random.default_rng(seed)
    rouge = np.clip(rng.beta(0.6, 0.6, n + n_ood), 0, 1)
    rouge[n:] = rng.uniform(0, 0.2, n_ood)
    bad = 1 - rouge
    noise = lambda: rng.normal(0, 1, n + n_ood)
    te = np.abs(signal * 2 * bad + 0.5 * noise())
    te[n:] += 1.0
    return pd.DataFrame(
        {
            "id": [f"q{i}" for i in range(n + n_ood)],
            "rouge_l": rouge,
            "exact_match": rouge > 0.95,
            "confidence": np.clip(1 - 0.8 * bad + 0.15 * noise(), 0.01, 1),
            "te": te,
            "ppl": np.exp(np.abs(signal * 1.5 * bad + 0.4 * noise())),
            "pe": np.abs(signal * 1.8 * bad + 0.5 * noise()),
            "se": np.abs(signal * bad + 0.3 * noise()),
            "dse": rng.choice([0.0, np.log(2), np.log(3), np.log(5)], n + n_ood),
            "length": rng.integers(1, 12, n + n_ood).astype(float),
            "is_ood": np.arange(n + n_ood) >= n,
        }
    )


@pytest.fixture(scope="module")
def report_inputs():
    per_method = {"clm": method_frame(0, 0.5), "ua_clm": method_frame(0, 1.0)}
    metrics = {m: compute_metrics(df, SCORES, n_bootstrap=50) for m, df in per_method.items()}
    comparison = compare_methods(per_method, SCORES, baseline="clm", n_bootstrap=50)
    return per_method, metrics, comparison


def test_write_report_writes_markdown_and_pngs(tmp_path, report_inputs):
    per_method, metrics, comparison = report_inputs
    protocol = {"num_samples": 5, "temperature": 0.3, "clusterer": "embedding",
                "similarity_threshold": 0.85}
    path = write_report(tmp_path / "out", per_method, metrics, comparison, protocol=protocol)
    assert path == tmp_path / "out" / "report.md"
    text = path.read_text()
    for needle in ("5 (temperature 0.3)", "untempered", "ROUGE-L F", "> 0.3",
                   "all-MiniLM-L6-v2, cosine >= 0.85", "length-only baseline",
                   "positive class = incorrect", "Differences vs `clm`", "OOD AUROC",
                   "Length (baseline)", "Correct/incorrect", "AUROC, OOD AUROC: DeLong SE",
                   "OOD AUPR: percentile bootstrap resampling each class", "too few to judge",
                   f"**{comparison.n_comparisons} comparisons**", "CI excludes 0 (unadjusted)",
                   f"Holm: excludes 0 (m={comparison.n_comparisons})"):  # fmt: skip
        assert needle in text, needle
    # every metric cell of the score tables: value [interval] (class counts)
    cells = re.findall(r"-?\d\.\d{4} \[-?\d\.\d{3}, -?\d\.\d{3}\] \((\d+)/(\d+)\)", text)
    assert len(cells) == 2 * len(SCORES) * 7
    n_correct = int((per_method["clm"]["rouge_l"][:240] > 0.3).sum())
    assert {(int(a), int(b)) for a, b in cells} == {(n_correct, 240 - n_correct), (240, 40)}
    pngs = ["roc.png", "rejection.png", "reliability.png", "hist_clm.png", "hist_ua_clm.png",
            "ood_roc.png"]
    for name in pngs:
        png = tmp_path / "out" / "plots" / name
        assert f"](plots/{name})" in text
        data = png.read_bytes()
        assert data[:8] == PNG_MAGIC and len(data) > 20_000, name
    json.dumps(metrics, allow_nan=False)


def test_write_report_single_method_without_ood_or_comparison(tmp_path):
    df = method_frame(1, 1.0, n_ood=0).drop(columns=["is_ood", "exact_match"])
    metrics = {"ua_clm": compute_metrics(df, ["te", "length"], n_bootstrap=0)}
    path = write_report(tmp_path, {"ua_clm": df}, metrics, None, scores=["te", "length"])
    text = path.read_text()
    assert "ood_roc.png" not in text and "Method comparison" not in text
    assert "not recorded" in text  # protocol values that were not given say so
    assert "n/a" in text  # no exact_match column
    assert "[" not in text.split("## Summary")[1].split("## Plots")[0]  # no intervals, no "CI"
    assert (tmp_path / "plots" / "roc.png").stat().st_size > 10_000

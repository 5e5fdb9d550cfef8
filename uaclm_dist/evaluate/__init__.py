"""Evaluation: per-example statistics, uncertainty scores, correctness, clustering, metrics, report.

Protocol: shared/METHOD.md section 3. Generation produces :class:`~.stats.ExampleStats` once;
scores (:mod:`.scores`) are pure functions of them; metrics (:mod:`.metrics`) are separate again.

Extension points, one registration each: a score is a :class:`~.scores.ScoreSpec` in
:data:`~.scores.SCORES`, a metric a :class:`~.metrics.MetricSpec` in :data:`~.metrics.METRICS`.
The rest reads them: :mod:`.frame` (per-example table), :mod:`.summary` (``metrics.json``, with
:mod:`.bootstrap` intervals), :mod:`.compare`, :mod:`.report` and :mod:`.plots`.
"""

from __future__ import annotations


def run_evaluation(config, adapters=None, **options):
    """See :func:`uaclm_dist.evaluate.runner.run_evaluation` (imported lazily: Ray is heavy);
    ``options``: its keyword arguments (``include_base``, ``out_dir``, ``verbose``, ...)."""
    from uaclm_dist.evaluate.runner import run_evaluation as _run

    return _run(config, adapters, **options)

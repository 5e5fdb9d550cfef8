"""Evaluation: per-example statistics, uncertainty scores, correctness, clustering, metrics, report.

Protocol: shared/METHOD.md section 3. Generation produces :class:`~.stats.ExampleStats` once;
scores (:mod:`.scores`) are pure functions of them; metrics (:mod:`.metrics`) are separate again.
"""

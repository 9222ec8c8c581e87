"""Judging predictions: pure math on arrays, with no files and no training.

Holds groupings, MaxAccGap and the fairness losses' terms (:mod:`~fairsearch.judge.fairness`), one
split's metrics (:mod:`~fairsearch.judge.metrics`), their 95 % intervals
(:mod:`~fairsearch.judge.intervals`), non-dominated sets and hypervolume
(:mod:`~fairsearch.judge.pareto`), decision thresholds chosen after training
(:mod:`~fairsearch.judge.thresholds`), a last-layer refit on validation features
(:mod:`~fairsearch.judge.refit`), and two models compared on the same images
(:mod:`~fairsearch.judge.paired`).

Layer: below ``methods`` (whose losses use its terms) and everything else but ``data``, ``model`` and
the ground. It must not import ``methods``, ``spec``, ``train``, ``output``, ``search`` or ``cli``, nor
Ray or transformers.
"""

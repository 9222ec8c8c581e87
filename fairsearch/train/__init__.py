"""One trial, top to bottom, and the checkpoints it leaves.

Holds the trial (:mod:`~fairsearch.train.trial`: data → model → fit → evaluate → checkpoint) and a
trial checkpoint's files, manifest and store (:mod:`~fairsearch.train.checkpoint`).

Layer: above ``spec``, ``methods``, ``judge``, ``data`` and ``model``; below ``output``. It must not import
``output``, ``search`` or ``cli``, nor Ray or Optuna: a trial runs the same under Ray Tune and under
``fairsearch train``.
"""

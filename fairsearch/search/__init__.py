"""Many trials on Ray: the sweep, its searcher and scheduler, the study's claim and the run's input checks.

Holds the run's input checks (:mod:`~fairsearch.search.preflight`, which writes nothing), one driver per
study (:mod:`~fairsearch.search.study`), MO-ASHA (:mod:`~fairsearch.search.scheduler`), Ray Tune's side of
a trial with its callbacks and searcher (:mod:`~fairsearch.search.tune_trials`) and the sweep itself
(:mod:`~fairsearch.search.sweep`).

Layer: the top but for ``cli``. It must not import ``cli``; nothing below it imports Ray Tune or Optuna's
study.
"""

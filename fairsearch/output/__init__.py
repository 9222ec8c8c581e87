"""What a sweep writes and what a person reads: the Parquet files, the fronts in them, tables and report.

Holds the registry of the fronts and the check of their rows (:mod:`~fairsearch.output.fronts`), the
results files and their fronts (:mod:`~fairsearch.output.results`), the trials table kept between a
sweep's writes (:mod:`~fairsearch.output.trials_table`), the text tables
(:mod:`~fairsearch.output.tables`), the thresholded fronts (:mod:`~fairsearch.output.threshold_fronts`),
the last-layer refit front (:mod:`~fairsearch.output.refit_fronts`), the seed-confirmed front
(:mod:`~fairsearch.output.confirm`), two trials compared on the same test images
(:mod:`~fairsearch.output.compare`) and the HTML report with its figures (:mod:`~fairsearch.output.report`,
:mod:`~fairsearch.output.report_figures`).

Layer: above ``train`` (it reads the trials' checkpointed scores), below ``search``. It must not import
``search`` or ``cli``, nor Ray: ``fairsearch pareto`` and ``report`` read a results folder without a cluster.
"""

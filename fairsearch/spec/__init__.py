"""What the user asked for: the sweep's vocabulary and the space file, read and checked once.

Holds the metrics a sweep may optimise or constrain, the method registry, the samplers and one trial's
settings with their bounds (:mod:`~fairsearch.spec.config`), the bounded YAML reader
(:mod:`~fairsearch.spec.yaml_input`), the space file's schema and its Optuna define-by-run function
(:mod:`~fairsearch.spec.space`), and the early-stopping block's settings
(:mod:`~fairsearch.spec.scheduler_settings`).

Layer: above ``methods`` (whose parameters it checks and samples), ``judge``, ``data`` and ``model`` (a
space names the data's attributes); below everything that trains, writes or runs. It must not import
``train``, ``output``, ``search`` or ``cli``, nor Ray or transformers: reading a space runs nothing.
"""

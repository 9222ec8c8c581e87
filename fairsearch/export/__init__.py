"""``fairsearch export``: a sweep's trial as a folder that transformers + peft load without fairsearch.

``choice`` picks the run and its thresholds and checks every file (no torch); ``card`` writes the model
card and ``fairness.json`` (no model library); ``weights`` writes the adapter, head, tokenizer, processor
and the tiny base model with transformers' and peft's writers; ``exporter`` checks, builds beside
``--out`` and renames. ``standalone`` is the export's ``load.py`` and imports nothing of fairsearch.
Must not import ``search`` or Ray. Re-exports nothing.
"""

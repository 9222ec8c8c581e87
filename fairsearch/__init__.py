"""fairsearch: multi-objective (accuracy vs. MaxAccGap) hyperparameter search for fair LoRA fine-tuning."""

__version__ = "0.1.0"

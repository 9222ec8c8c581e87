"""Harvard-FairVLMed reader, the built-in synthetic stand-in and a dataset summary.

Nothing here knows about models or trials: a :class:`Split` holds file paths, labels and integer attribute
codes, and reads one image at a time on demand.
"""

from fairsearch.data.fairvlmed import (
    ATTRIBUTE_VALUES,
    ATTRIBUTES,
    SPLIT_FOLDERS,
    SPLITS,
    Split,
    load_fairvlmed,
)
from fairsearch.data.summary import format_summary, summarize
from fairsearch.data.synthetic import builtin_synthetic, training_images, write_synthetic

__all__ = [
    "ATTRIBUTES",
    "ATTRIBUTE_VALUES",
    "SPLITS",
    "SPLIT_FOLDERS",
    "Split",
    "builtin_synthetic",
    "format_summary",
    "load_fairvlmed",
    "summarize",
    "training_images",
    "write_synthetic",
]

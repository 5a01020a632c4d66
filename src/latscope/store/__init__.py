"""The results store: one directory per run, written atomically, read with version checks."""

from latscope.store.layout import ResultsStore, resolve_results_root
from latscope.store.runfile import RunRecord, load_run_json
from latscope.store.samples import SAMPLE_COLUMNS, Samples, read_samples

__all__ = [
    "ResultsStore",
    "resolve_results_root",
    "RunRecord",
    "load_run_json",
    "SAMPLE_COLUMNS",
    "Samples",
    "read_samples",
]

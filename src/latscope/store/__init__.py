"""The results store: one directory per run, written atomically, read with version checks."""

from latscope.store.layout import ResultsStore, resolve_results_root
from latscope.store.runfile import RunRecord, load_run_json
from latscope.store.samples import SAMPLE_COLUMNS, Samples, read_samples

__all__ = [
    "SAMPLE_COLUMNS",
    "ResultsStore",
    "RunRecord",
    "Samples",
    "load_run_json",
    "read_samples",
    "resolve_results_root",
]

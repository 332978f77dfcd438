"""MC-MED reading, synthetic cohorts and the segment corpus.

Importing this package pulls numpy only; pandas/pyarrow/wfdb load inside the functions
that need them, and torch only in :mod:`anyecg_edge.training.data.dataset`.
"""

from anyecg_edge.training.data.corpus import CorpusError, build_corpus, parse_duration_s
from anyecg_edge.training.data.mcmed import MCMEDError
from anyecg_edge.training.data.synth import synth_cohort

__all__ = ["CorpusError", "MCMEDError", "build_corpus", "parse_duration_s", "synth_cohort"]

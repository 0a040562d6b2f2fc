"""Drafter-invariant speculative decoding (Gumbel / Weighted-MinHash coupling) on the engine's decoding steps."""

from trlm.speculative.decode import SCHEMES, SpecStats, speculative_generate
from trlm.speculative.drafters import DRAFTERS, ModelDrafter, NgramDrafter, early_exit, make_drafter

__all__ = ["SCHEMES", "SpecStats", "speculative_generate", "DRAFTERS", "ModelDrafter", "NgramDrafter",
           "early_exit", "make_drafter"]

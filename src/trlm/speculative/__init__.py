"""Drafter-invariant speculative decoding (Gumbel / Weighted-MinHash coupling) on the engine's decoding steps."""

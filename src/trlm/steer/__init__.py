"""AxBench-style concept detection and steering over forward hooks. Empty until that issue lands."""

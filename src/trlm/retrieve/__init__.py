"""Passage retrieval: BEIR data, a first stage (BM25 or MiniLM dense) and re-ranking its top-k with any scorer."""

from trlm.retrieve.beir import BeirData, load_beir, read_qrels, read_run, write_run
from trlm.retrieve.fusion import linear_fuse
from trlm.retrieve.first_stage import BM25Index, DenseIndex, build_index, rerank_hits, retrieve, rrf_fuse

__all__ = ["BeirData", "load_beir", "read_qrels", "read_run", "write_run", "BM25Index", "DenseIndex", "build_index",
           "rerank_hits", "retrieve", "rrf_fuse", "linear_fuse"]

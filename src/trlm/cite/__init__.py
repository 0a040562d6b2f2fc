"""Citation attribution: linear, binary and exclusion search over a source's sentences with any scorer."""

from trlm.cite.attribution import SEARCHES, Span, binary_search, cite_file, exclusion_search, linear_search

__all__ = ["SEARCHES", "Span", "binary_search", "cite_file", "exclusion_search", "linear_search"]

"""Readers of the evaluation data several systems share: AlpacaEval judged candidates and the held-out rule
(:mod:`trlm.data.alpaca`), XSTest (:mod:`trlm.data.xstest`). Imports only :mod:`trlm.core`."""

"""Where the forward passes run: the in-process engine against a vLLM server (``trlm bench backends``).

The engines themselves are core's (:class:`trlm.core.engine.Engine`, :class:`trlm.core.remote.RemoteEngine`);
this package measures them side by side on the applications' workloads.
"""

from trlm.backends.bench import run_backends_bench

__all__ = ["run_backends_bench"]

"""Prometheus metrics written by hand (text exposition format 0.0.4): counters, gauges and histograms.

    trlm_requests_total{route="/v1/rerank",status="200"} 12
    trlm_request_seconds_bucket{route="/v1/rerank",le="0.5"} 9
    trlm_batch_jobs_bucket{batcher="rerank:trlm-fo",le="4"} 3       requests coalesced into one engine call
    trlm_queue_depth{batcher="rerank:trlm-fo"} 0
"""

from __future__ import annotations

import threading
from typing import Mapping

Labels = Mapping[str, str]

HELP = {
    "trlm_requests_total": ("counter", "HTTP requests by route and status code."),
    "trlm_request_seconds": ("histogram", "Request latency in seconds, by route."),
    "trlm_batch_jobs": ("histogram", "Requests coalesced into one engine call, by batcher."),
    "trlm_batch_tokens": ("histogram", "Estimated tokens of one coalesced engine call, by batcher."),
    "trlm_queue_depth": ("gauge", "Requests waiting for the engine, by batcher."),
    "trlm_in_flight": ("gauge", "Requests being handled."),
    "trlm_rejected_total": ("counter", "Requests refused before running (queue full), by batcher."),
    "trlm_cancelled_total": ("counter", "Queued requests dropped because their client went away, by batcher."),
    "trlm_cache_hits_total": ("counter", "Score cache hits."),
    "trlm_cache_misses_total": ("counter", "Score cache misses."),
}
BUCKETS = {
    "trlm_request_seconds": (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
    "trlm_batch_jobs": (1, 2, 4, 8, 16, 32, 64),
    "trlm_batch_tokens": (256, 1024, 4096, 16384, 65536),
}


def _key(labels: Labels | None) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((labels or {}).items()))


def _fmt_labels(items: tuple[tuple[str, str], ...], extra: tuple[tuple[str, str], ...] = ()) -> str:
    pairs = items + extra
    if not pairs:
        return ""

    def esc(v: object) -> str:
        return str(v).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")

    return "{" + ",".join(f'{k}="{esc(v)}"' for k, v in pairs) + "}"


class Metrics:
    """Thread-safe store of named series; :meth:`render` writes the Prometheus text."""

    def __init__(self):
        self._lock = threading.Lock()
        self._values: dict[str, dict[tuple, float]] = {}
        self._hist: dict[str, dict[tuple, list]] = {}  # name -> labels -> [bucket counts..., sum, count]

    def inc(self, name: str, labels: Labels | None = None, by: float = 1.0) -> None:
        with self._lock:
            series = self._values.setdefault(name, {})
            series[_key(labels)] = series.get(_key(labels), 0.0) + by

    def set(self, name: str, value: float, labels: Labels | None = None) -> None:
        with self._lock:
            self._values.setdefault(name, {})[_key(labels)] = float(value)

    def observe(self, name: str, value: float, labels: Labels | None = None) -> None:
        bounds = BUCKETS[name]
        with self._lock:
            h = self._hist.setdefault(name, {}).setdefault(_key(labels), [0] * len(bounds) + [0.0, 0])
            for i, b in enumerate(bounds):
                if value <= b:
                    h[i] += 1
            h[-2] += value
            h[-1] += 1

    def value(self, name: str, labels: Labels | None = None) -> float:
        """A counter's or gauge's current value (0 if never set); a histogram's observation count."""
        with self._lock:
            if name in self._hist:
                return float(self._hist[name].get(_key(labels), [0])[-1])
            return self._values.get(name, {}).get(_key(labels), 0.0)

    def render(self) -> str:
        lines: list[str] = []
        with self._lock:
            for name in sorted(set(self._values) | set(self._hist)):
                kind, text = HELP.get(name, ("untyped", name))
                lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]
                for labels, v in sorted(self._values.get(name, {}).items()):
                    lines.append(f"{name}{_fmt_labels(labels)} {v:g}")
                for labels, h in sorted(self._hist.get(name, {}).items()):
                    for b, c in zip(BUCKETS[name], h):
                        lines.append(f"{name}_bucket{_fmt_labels(labels, (('le', f'{b:g}'),))} {c}")
                    lines.append(f"{name}_bucket{_fmt_labels(labels, (('le', '+Inf'),))} {h[-1]}")
                    lines.append(f"{name}_sum{_fmt_labels(labels)} {h[-2]:g}")
                    lines.append(f"{name}_count{_fmt_labels(labels)} {h[-1]}")
        return "\n".join(lines) + "\n"

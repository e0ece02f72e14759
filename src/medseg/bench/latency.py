"""Latency and memory measurement of one backend: the timing loop and a peak-RSS sampler.

Timing: ``warmup`` untimed calls, then ``repeats`` x ``iters`` timed calls on the same real
network-size batch; each call's time is the backend's ``compute_ms`` (CUDA events around the
engine on a GPU, ``perf_counter_ns`` around the session call on CPU). The p50 of each repeat
is kept for the noise-aware baseline comparison (:mod:`medseg.bench.stats`).
"""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING

import numpy as np

from medseg.bench.results import LatencyStats
from medseg.runtime import Backend, Segmenter

if TYPE_CHECKING:
    from medseg.bench.evaluation import EvalCase
    from medseg.bench.options import BenchOptions

__all__ = ["PeakRss", "time_batches", "timing_slices"]


class PeakRss:
    """Samples this process's resident memory every 20 ms; ``peak_mb`` after ``stop``."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._page = os.sysconf("SC_PAGE_SIZE")

    def _rss(self) -> int:
        try:
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * self._page
        except OSError:
            import resource

            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self._rss())

    def __enter__(self) -> PeakRss:
        self.peak = self._rss()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())

    @property
    def peak_mb(self) -> float:
        return self.peak / 1e6


def time_batches(
    backend: Backend, slices: np.ndarray, batch: int, options: BenchOptions
) -> tuple[LatencyStats, tuple[float, ...]]:
    """Per-call compute time over ``repeats`` x ``iters`` calls after ``warmup`` calls."""
    reps = -(-batch // len(slices))
    data = np.ascontiguousarray(np.concatenate([slices] * reps)[:batch])
    for _ in range(options.warmup):
        backend.infer(data)
    samples: list[float] = []
    repeat_p50: list[float] = []
    for _ in range(options.repeats):
        times = []
        for _ in range(options.iters):
            backend.infer(data)
            assert backend.last_timing is not None
            times.append(backend.last_timing.compute_ms)
        repeat_p50.append(float(np.median(times)))
        samples.extend(times)
    return LatencyStats.from_samples(samples), tuple(repeat_p50)


def timing_slices(segmenter: Segmenter, case: EvalCase, count: int) -> np.ndarray:
    """``count`` real network-size slices from the middle of the evaluated slices."""
    from medseg.runtime import load_scan

    scan = load_scan(case.images)
    slices = segmenter.preprocess(scan.image, scan.source, scan.affine, scan.spacing)
    index = list(case.slices) if case.slices is not None else list(range(len(slices)))
    mid = len(index) // 2
    chosen = index[max(mid - count // 2, 0) : max(mid - count // 2, 0) + count]
    return slices[chosen]

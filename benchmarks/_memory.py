"""Peak resident memory of a block of code, for the benchmark scripts."""

from __future__ import annotations

import threading

import psutil


class PeakRSS:
    """Context manager sampling the resident set size in a background thread.

    Parameters
    ----------
    children : bool
        Add the RSS of child processes (multiprocessing and Dask workers) to this process's.
    interval : float
        Seconds between samples.

    Attributes ``start_mib``, ``peak_mib`` and ``growth_mib`` (peak above the start) are in MiB.
    """

    def __init__(self, *, children: bool = True, interval: float = 0.02) -> None:
        self.children = children
        self.interval = interval
        self._process = psutil.Process()
        self._stop = threading.Event()
        self.start = self.peak = self._total()

    def _total(self) -> int:
        total = self._process.memory_info().rss
        if self.children:
            for child in self._process.children(recursive=True):
                try:
                    total += child.memory_info().rss
                except psutil.Error:
                    pass  # the child exited between listing and reading
        return total

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._total())
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakRSS:
        self.start = self.peak = self._total()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._total())

    @property
    def start_mib(self) -> float:
        return self.start / 2**20

    @property
    def peak_mib(self) -> float:
        return self.peak / 2**20

    @property
    def growth_mib(self) -> float:
        return (self.peak - self.start) / 2**20

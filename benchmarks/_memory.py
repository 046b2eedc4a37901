"""Peak resident memory of a block of code, for the benchmark scripts."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import psutil


def proportional_set_size(pid: int) -> int | None:
    """Bytes of the process's proportional set size (Linux ``smaps_rollup``), or None.

    Each page counts once in all: a page shared by ``n`` processes adds ``1/n`` of its size to
    each, so shared-memory blocks mapped by several workers are not counted several times
    (summing RSS over processes counts them once per process).
    """
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) * 1024
    return None


class PeakRSS:
    """Context manager sampling the resident set size in a background thread.

    Parameters
    ----------
    children : bool
        Add the RSS of child processes (multiprocessing and Dask workers) to this process's.
    interval : float
        Seconds between samples. The list of child processes (a scan of ``/proc``, the costly
        part of a sample) is refreshed every ``refresh`` seconds only.

    Attributes ``start_mib``, ``peak_mib`` and ``growth_mib`` (peak above the start) are in MiB;
    ``pss_growth_mib`` is the same growth measured as proportional set size (shared pages
    counted once over all processes) when ``pss`` is set, else None (also where the kernel
    does not report it). Reading the PSS makes the kernel walk the page tables of every
    process at every sample, which costs CPU time: leave it off when timing.
    """

    def __init__(
        self,
        *,
        children: bool = True,
        interval: float = 0.02,
        pss: bool = False,
        refresh: float = 0.5,
    ) -> None:
        self.children = children
        self.pss = pss
        self.interval = interval
        self.refresh = refresh
        self._process = psutil.Process()
        self._listed: list[psutil.Process] = []
        self._listed_at = -float("inf")
        self._stop = threading.Event()
        self.start = self.peak = self._total()
        self.pss_start = self.pss_peak = self._total_pss()

    def _processes(self) -> list[psutil.Process]:
        if not self.children:
            return [self._process]
        now = time.monotonic()
        if now - self._listed_at >= self.refresh:
            self._listed = self._process.children(recursive=True)
            self._listed_at = now
        return [self._process, *self._listed]

    def _total(self) -> int:
        total = 0
        for process in self._processes():
            try:
                total += process.memory_info().rss
            except psutil.Error:
                pass  # the child exited between listing and reading
        return total

    def _total_pss(self) -> int | None:
        if not self.pss:
            return None
        sizes = [proportional_set_size(p.pid) for p in self._processes()]
        if sizes[0] is None:
            return None
        return sum(size for size in sizes if size is not None)

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._total())
            pss = self._total_pss()
            if pss is not None:
                self.pss_peak = max(self.pss_peak, pss)
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakRSS:
        self._listed_at = -float("inf")
        self.start = self.peak = self._total()
        self.pss_start = self.pss_peak = self._total_pss()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()
        self._listed_at = -float("inf")
        self.peak = max(self.peak, self._total())
        pss = self._total_pss()
        if pss is not None:
            self.pss_peak = max(self.pss_peak, pss)

    @property
    def start_mib(self) -> float:
        return self.start / 2**20

    @property
    def peak_mib(self) -> float:
        return self.peak / 2**20

    @property
    def growth_mib(self) -> float:
        return (self.peak - self.start) / 2**20

    @property
    def pss_growth_mib(self) -> float | None:
        if self.pss_start is None:
            return None
        return (self.pss_peak - self.pss_start) / 2**20

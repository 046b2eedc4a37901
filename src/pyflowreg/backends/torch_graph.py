"""CUDA-graph replay of whole batch solves for the torch backend (``cuda_graphs=True``).

A batch solve launches tens of thousands of small kernels (about 30 per SOR sweep and level), so
small batches and the coarse-only presets are bound by launch overhead, not by the GPU. The
solve is shape-static for a given batch shape and has no host synchronisation, so it can be
captured once into a CUDA graph and replayed for every later batch of that shape: inputs are
copied into the graph's static buffers, one replay runs all kernels, and the static output holds
the fields until the next replay.
"""

from __future__ import annotations

import warnings
from collections import OrderedDict
from collections.abc import Callable

import torch

MAX_GRAPHS = 4  # captured batch shapes kept per backend (each holds its own memory pool)


class GraphCache:
    """Captured solves keyed by (prepared reference, input shapes); falls back to eager.

    Parameters
    ----------
    solve : callable
        ``solve(prepared, mov, flow) -> flow`` on device tensors; must not synchronise with the
        host and must not modify its inputs.
    device : torch.device
        The CUDA device.
    """

    def __init__(self, solve: Callable, device: torch.device) -> None:
        self.solve = solve
        self.device = device
        self.enabled = True
        self._graphs: OrderedDict = OrderedDict()

    def __call__(self, prepared, mov: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return self.solve(prepared, mov, flow)
        key = (id(prepared), tuple(mov.shape), tuple(flow.shape))
        entry = self._graphs.get(key)
        if entry is None or entry[0] is not prepared:
            try:
                entry = self._capture(prepared, mov, flow)
            except RuntimeError as err:  # capture unsupported here: run eagerly from now on
                warnings.warn(
                    f"CUDA graph capture failed ({err}); flowreg_torch runs without graphs",
                    RuntimeWarning,
                    stacklevel=3,
                )
                self.enabled = False
                self._graphs.clear()
                return self.solve(prepared, mov, flow)
            self._graphs[key] = entry
            while len(self._graphs) > MAX_GRAPHS:
                self._graphs.popitem(last=False)
        else:
            self._graphs.move_to_end(key)
        _, graph, static_mov, static_flow, static_out = entry
        static_mov.copy_(mov)
        static_flow.copy_(flow)
        graph.replay()
        return static_out

    def _capture(self, prepared, mov: torch.Tensor, flow: torch.Tensor) -> tuple:
        static_mov = mov.clone()
        static_flow = flow.clone()
        # warm-up on a side stream: fills the resampling-matrix cache (host copies are not
        # allowed during capture) and lets the allocator settle
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            self.solve(prepared, static_mov, static_flow)
        torch.cuda.current_stream(self.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_out = self.solve(prepared, static_mov, static_flow)
        return prepared, graph, static_mov, static_flow, static_out

    def clear(self) -> None:
        """Drop every captured graph (and with it its memory pool)."""
        self._graphs.clear()

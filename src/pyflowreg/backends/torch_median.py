"""Exact 5x5 median filter from elementwise min/max: a pruned selection network in torch.

``torch.median`` over unfolded 25-vectors copies every window and runs one small selection per
pixel, which is slow on both CPU and GPU. Here the median is computed by a comparator network on
whole image planes, in three stages that share work between neighbouring windows:

1. sort the vertical 5-tuples of every column of the (mirror-padded) image;
2. merge two adjacent sorted columns into a sorted 10-list (shared by every window that holds
   both columns);
3. merge the lists of columns ``j-2, j-1``, ``j, j+1`` and column ``j+2`` and select rank 12 of 25.

The networks are Batcher odd-even merges on power-of-two wires; padding wires hold +inf, are
propagated as constants and vanish, and every comparator output that does not reach a requested
rank is pruned. Selection networks are exact, so the result equals any other median (e.g. the
quickselect of :func:`pyflowreg.core.solver.median5`).
"""

from __future__ import annotations

from functools import cache

import numpy as np
import torch

from ..core.solver import median5 as core_median5

_INF = "inf"
MEDIAN_CHUNK = 1 << 24  # output pixels per chunk (bounds the live planes of the network)


def _merge(lo: int, hi: int, r: int):
    """Comparators of Batcher's odd-even merge of the sorted halves of wires ``lo..hi``."""
    step = 2 * r
    if step < hi - lo:
        yield from _merge(lo, hi, step)
        yield from _merge(lo + r, hi, step)
        yield from ((i, i + r) for i in range(lo + r, hi - r, step))
    else:
        yield (lo, lo + r)


def _sort(lo: int, hi: int):
    """Comparators of Batcher's odd-even merge sort of wires ``lo..hi`` (power-of-two count)."""
    if hi > lo:
        mid = lo + (hi - lo) // 2
        yield from _sort(lo, mid)
        yield from _sort(mid + 1, hi)
        yield from _merge(lo, hi, 1)


def _program(wires: list, comparators, ranks: list[int]) -> tuple[list, list[int]]:
    """Prune a comparator network to the outputs ``ranks``.

    ``wires`` holds input numbers or ``_INF``. Returns the program, a list of
    ``(is_max, a, b)`` operations whose results are numbered after the inputs, and the value
    number of each requested rank.
    """
    n_inputs = sum(1 for w in wires if w != _INF)
    ops: list[tuple[bool, object, object]] = []
    w = list(wires)
    for i, j in comparators:
        a, b = w[i], w[j]
        if a == _INF:  # min(inf, b) = b, max = inf
            w[i], w[j] = b, a
        elif b != _INF:
            ops.append((False, a, b))
            ops.append((True, a, b))
            w[i], w[j] = ("op", len(ops) - 2), ("op", len(ops) - 1)
    outs = [w[r] for r in ranks]
    needed: set[int] = set()
    stack = [x for x in outs if isinstance(x, tuple)]
    while stack:
        k = stack.pop()[1]
        if k not in needed:
            needed.add(k)
            stack += [x for x in ops[k][1:] if isinstance(x, tuple)]
    number = {}
    program = []

    def ref(x):
        return number[x[1]] if isinstance(x, tuple) else x

    for k in sorted(needed):
        is_max, a, b = ops[k]
        program.append((is_max, ref(a), ref(b)))
        number[k] = n_inputs + len(program) - 1
    return program, [ref(x) for x in outs]


@cache
def _stages() -> tuple:
    """The three pruned programs (see module docstring)."""
    # stage 3: lists a (10), b (10) padded to 16 wires each, c (5) padded to 32; rank 12
    wires3 = [*range(10), *[_INF] * 6, *range(10, 20), *[_INF] * 6, *range(20, 25)]
    wires3 += [_INF] * 27
    comps3 = [*_merge(0, 31, 1), *_merge(0, 63, 1)]
    prog3, out3 = _program(wires3, comps3, [12])
    # stage 2: two sorted columns (5 + 3 pads each) merged into 10 sorted values
    wires2 = [*range(5), *[_INF] * 3, *range(5, 10), *[_INF] * 3]
    prog2, out2 = _program(wires2, list(_merge(0, 15, 1)), list(range(10)))
    # stage 1: sort 5 values (3 pads)
    prog1, out1 = _program([*range(5), *[_INF] * 3], list(_sort(0, 7)), list(range(5)))
    return (prog1, out1), (prog2, out2), (prog3, out3)


def _run(program: list, outputs: list[int], inputs: list[torch.Tensor]) -> list[torch.Tensor]:
    """Evaluate a pruned program on tensors, releasing every value after its last use."""
    last = {}
    for k, (_, a, b) in enumerate(program):
        last[a] = last[b] = k
    for o in outputs:
        last[o] = len(program)
    values: list = list(inputs) + [None] * len(program)
    base = len(inputs)
    for k, (is_max, a, b) in enumerate(program):
        fn = torch.maximum if is_max else torch.minimum
        values[base + k] = fn(values[a], values[b])
        for x in (a, b):
            if last.get(x, -1) == k:
                values[x] = None
    return [values[o] for o in outputs]


def _mirror_index(n: int, device: torch.device) -> torch.Tensor:
    """Indices ``-2 .. n+1`` mirrored into ``[0, n)`` (built on the device: no host copy)."""
    i = torch.arange(-2, n + 2, device=device)
    if n == 1:
        return torch.zeros_like(i)
    i = i.remainder(2 * n)
    return torch.where(i >= n, 2 * n - 1 - i, i)


def _median_chunk(x: torch.Tensor) -> torch.Tensor:
    _, h, w = x.shape
    (p1, o1), (p2, o2), (p3, o3) = _stages()
    iy, ix = _mirror_index(h, x.device), _mirror_index(w, x.device)
    xp = x.index_select(1, iy).index_select(2, ix)  # (T, h+4, w+4)
    cols = _run(p1, o1, [xp[:, r : r + h] for r in range(5)])  # sorted columns (T, h, w+4)
    pairs = _run(p2, o2, [c[..., :-1] for c in cols] + [c[..., 1:] for c in cols])
    inputs = [p[..., 0:w] for p in pairs] + [p[..., 2 : w + 2] for p in pairs]
    inputs += [c[..., 4 : w + 4] for c in cols]
    return _run(p3, o3, inputs)[0]


def median5(x: torch.Tensor) -> torch.Tensor:
    """5x5 median filter of ``x`` (T, h, w) with symmetric borders (-1 -> 0, -2 -> 1).

    CPU tensors go through the Numba quickselect of the core (shared memory, no copy of the
    frames), which beats any torch formulation there; other devices run the network.
    """
    t, h, w = x.shape
    if x.device.type == "cpu":
        frames = x.contiguous().numpy()
        return torch.from_numpy(np.stack([core_median5(f) for f in frames]))
    step = max(1, MEDIAN_CHUNK // (h * w))
    if step >= t:
        return _median_chunk(x).contiguous()
    return torch.cat([_median_chunk(x[s : s + step]) for s in range(0, t, step)])

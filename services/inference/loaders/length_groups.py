"""One tokenised batch run as a few sub-batches of similar lengths, when that costs less than its padding.

A graph that runs on the padded batch (ONNX, TorchScript) pays for every padded token: a batch
of texts of 6 to 50 tokens costs as much as if every text had 50. The batcher groups texts by
length when many wait, but a served batch is cut from the few that are there (32 callers: ~15 texts
of any length), so an ONNX MiniLM spent ~8 CPU ms a text served against ~5 on length-sorted batches
(2026-12-01). Each forward call also has a fixed cost; measured on the ONNX MiniLM it is worth about
:data:`CALL_COST_TOKENS` padded tokens (batch 1 costs ~2.3x a text's share of a length-sorted batch
of 32 texts averaging ~28 tokens).

:func:`length_groups` cuts the rows, sorted by length, into runs minimising
``CALL_COST_TOKENS x runs + sum over runs of rows x longest``: one run when the lengths are close,
several when the padding would cost more than the extra calls.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: the fixed cost of one forward call, in padded tokens (see the module docstring)
CALL_COST_TOKENS = 32


def length_groups(lengths: Sequence[int], call_cost: int = CALL_COST_TOKENS) -> list[list[int]]:
    """Row indices in groups (each ascending by length; groups shortest first) of least total cost."""
    n = len(lengths)
    order = sorted(range(n), key=lambda i: lengths[i])
    sorted_lengths = [int(lengths[i]) for i in order]
    best = [0.0] + [float("inf")] * n  # best[j]: least cost of the j shortest rows
    cut = [0] * (n + 1)
    for j in range(1, n + 1):
        longest = sorted_lengths[j - 1]
        for i in range(j):  # the last run holds sorted rows i .. j-1
            cost = best[i] + call_cost + (j - i) * longest
            if cost < best[j]:
                best[j], cut[j] = cost, i
    groups: list[list[int]] = []
    j = n
    while j > 0:
        i = cut[j]
        groups.append(order[i:j])
        j = i
    return groups[::-1]


def right_padded_lengths(mask: np.ndarray) -> np.ndarray | None:
    """Each row's real tokens if every row's real tokens come first (right padding), else None."""
    lengths = mask.sum(axis=1).astype(np.int64)
    prefix = np.arange(mask.shape[1])[None, :] < lengths[:, None]
    return lengths if np.array_equal(mask != 0, prefix) else None


def sub_batch(prepared: dict[str, np.ndarray], rows: list[int], width: int) -> dict[str, np.ndarray]:
    """``rows`` of a right-padded tokenised batch, cut to ``width`` tokens."""
    index = np.asarray(rows, dtype=np.int64)
    return {name: np.ascontiguousarray(array[index, :width]) for name, array in prepared.items()}


__all__ = ["CALL_COST_TOKENS", "length_groups", "right_padded_lengths", "sub_batch"]

"""A tokenised batch of mixed lengths run as sub-batches of similar lengths (loaders/length_groups.py) by the
encoders whose graph pays for padding (ONNX, TorchScript): the groups are the cheapest cut, every row is
run once, each sub-batch is cut to its own longest text, and the vectors are those of the whole batch."""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pytest

from services.inference.device import choose_device
from services.inference.loaders import load_encoder
from services.inference.loaders.length_groups import (
    CALL_COST_TOKENS,
    length_groups,
    right_padded_lengths,
    sub_batch,
)
from services.inference.model_spec import parse_model_properties
from tests.opensearch_factories import build_tiny_dense, build_tiny_sparse, register_body

CPU = choose_device(False)
TEXTS = ["a", "a cat sits on the mat and the dog runs in the park with a ball " * 2, "a dog", "the mat",
         "a cat sits on the mat and the dog runs in the park " * 2, "", "cat", "a dog runs"]


def cost(groups: list[list[int]], lengths: list[int], call_cost: int) -> int:
    return sum(call_cost + len(g) * max(lengths[i] for i in g) for g in groups)


def brute_force(lengths: list[int], call_cost: int) -> int:
    """The least cost over every cut of the length-sorted rows into runs."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    best = None
    for cuts in itertools.product([False, True], repeat=len(order) - 1):
        groups, current = [], [order[0]]
        for row, cut in zip(order[1:], cuts, strict=True):
            if cut:
                groups.append(current)
                current = []
            current.append(row)
        groups.append(current)
        c = cost(groups, lengths, call_cost)
        best = c if best is None else min(best, c)
    return best


@pytest.mark.parametrize("lengths", [[5] * 8, [3, 50, 4, 48, 5, 47, 6], [10, 12, 14, 90, 91, 200, 11, 13],
                                     list(range(1, 11)), [7]])
def test_groups_are_the_cheapest_cut(lengths):
    groups = length_groups(lengths)
    assert sorted(i for g in groups for i in g) == list(range(len(lengths)))  # each row once
    assert cost(groups, lengths, CALL_COST_TOKENS) == brute_force(lengths, CALL_COST_TOKENS)
    assert cost(groups, lengths, CALL_COST_TOKENS) <= cost([list(range(len(lengths)))], lengths,
                                                           CALL_COST_TOKENS)


def test_close_lengths_stay_one_batch_far_ones_split():
    assert len(length_groups([20, 22, 24, 25, 21])) == 1
    short_and_long = length_groups([4] * 8 + [120] * 8)
    assert [sorted(g) for g in short_and_long] == [list(range(8)), list(range(8, 16))]


def test_only_right_padded_batches_are_cut():
    mask = np.array([[1, 1, 1, 0], [1, 0, 0, 0], [1, 1, 1, 1]])
    assert right_padded_lengths(mask).tolist() == [3, 1, 4]
    assert right_padded_lengths(np.array([[0, 1, 1], [1, 1, 1]])) is None  # left padding
    prepared = {"input_ids": np.arange(12).reshape(3, 4), "attention_mask": mask}
    sub = sub_batch(prepared, [1, 0], 3)
    assert sub["input_ids"].tolist() == [[4, 5, 6], [0, 1, 2]] and sub["attention_mask"].tolist() == [
        [1, 0, 0], [1, 1, 1]]


class Recording:
    """A runner wrapper noting the (rows, tokens) shape of every call."""

    def __init__(self, runner) -> None:
        self.runner = runner
        self.shapes: list[tuple[int, int]] = []

    def __call__(self, prepared):
        self.shapes.append(prepared["input_ids"].shape)
        return self.runner(prepared)


def run_both_ways(encoder, texts):
    prepared = encoder.prepare_texts(texts)
    lengths = prepared["attention_mask"].sum(axis=1)
    recording = Recording(encoder.runner)
    encoder.runner = recording
    try:
        grouped = encoder.forward_texts(prepared)
        encoder.group_lengths = False
        whole = encoder.forward_texts(prepared)
    finally:
        encoder.group_lengths = True
        encoder.runner = recording.runner
    return grouped, whole, recording.shapes, lengths


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_dense_artifact_sub_batches_give_the_whole_batch_vectors(fmt, tmp_path):
    art, _ = build_tiny_dense(tmp_path / "build", fmt)
    config = {"model_type": "bert", "pooling_mode": "mean", "normalize_result": False}
    body = register_body(art, model_format={"onnx": "ONNX", "torchscript": "TORCH_SCRIPT"}[fmt],
                         model_config=config)
    encoder = load_encoder(parse_model_properties(body), CPU, cache_dir=tmp_path / "cache")
    assert encoder.group_lengths
    grouped, whole, shapes, lengths = run_both_ways(encoder, TEXTS)
    np.testing.assert_allclose(grouped, whole, atol=1e-5)
    calls, last = shapes[:-1], shapes[-1]
    assert last == (len(TEXTS), lengths.max())  # the whole batch, run once as it is
    assert len(calls) >= 2  # short and long texts went in separate calls
    assert sum(rows for rows, _ in calls) == len(TEXTS)
    # each call is cut to its own longest text: fewer padded tokens than the whole batch
    assert sum(rows * width for rows, width in calls) < len(TEXTS) * lengths.max()
    assert sorted(width for _, width in calls)[0] < lengths.max()
    # on a GPU padded tokens are nearly free: the batch runs whole
    encoder.info = dataclasses.replace(encoder.info, device="cuda:0")
    _, _, shapes, _ = run_both_ways(encoder, TEXTS)
    assert shapes == [(len(TEXTS), lengths.max())] * 2


def test_sparse_artifact_sub_batches_give_the_whole_batch_vectors(tmp_path):
    art, _ = build_tiny_sparse(tmp_path / "build", "onnx")
    body = register_body(art, function_name="SPARSE_ENCODING", model_format="ONNX")
    encoder = load_encoder(parse_model_properties(body), CPU, cache_dir=tmp_path / "cache")
    grouped, whole, shapes, _ = run_both_ways(encoder, TEXTS)
    assert len(shapes) >= 3 and isinstance(grouped, list) and len(grouped) == len(TEXTS)
    for g, w in zip(grouped, whole, strict=True):
        assert g.indices.tolist() == w.indices.tolist()
        np.testing.assert_allclose(g.values, w.values, atol=1e-5)

"""gateway.service.vectors: the checks and arithmetic every stored vector goes through.

Written to kill the mutants a mutation run left alive (see the issue 7 report): a zero vector must not
become NaN, a vector's element type is checked before its value, the float32 boundary is exact, and
dotted paths reach nested properties.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from gateway.service.vectors import FLOAT32_MAX, check_vector, get_path, l2_normalize


def test_l2_normalize_leaves_a_zero_vector_alone():
    out = l2_normalize(np.zeros(3, dtype=np.float32))
    assert np.all(np.isfinite(out)) and not out.any()
    assert np.allclose(l2_normalize(np.array([3.0, 4.0])), [0.6, 0.8])


@pytest.mark.parametrize("values,field,problem", [
    ([True, 0.0, 0.0], "v.0", "is not a number: True"),
    ([0.0, "1", 0.0], "v.1", "is not a number: '1'"),
    ([0.0, 0.0, None], "v.2", "is not a number: None"),
    ([0.0, math.nan, 0.0], "v.1", "is not a finite number: nan"),
    ([0.0, 0.0, -math.inf], "v.2", "is not a finite number: -inf"),
    ([0.0, 1e39, 0.0], "v.1", "1e+39 is outside the float32 range"),
    ([0.0, 0.0, -3.5e38], "v.2", "-3.5e+38 is outside the float32 range"),
    ([10**400, 0.0, 0.0], "v.0", "is outside the float32 range"),
    ([0.0, 0.0], "v", "has 2 dimensions, the collection expects 3"),
])
def test_check_vector_names_the_element(values, field, problem):
    found = check_vector(values, 3, "v")
    assert found is not None and found[0] == field and problem in found[1], found


@pytest.mark.parametrize("values", [
    [0.5, math.nan, math.inf, 1e39],
    [0.5, 1, math.nan, 1e39],  # an int: the element-by-element path
    [1e39, 2.0, -math.inf, 0.0],
])
def test_the_first_non_finite_element_is_named_before_any_out_of_range_one(values):
    """Plain floats are checked in C, anything else element by element: the same answer either way."""
    found = check_vector(values, 4, "v")
    first_bad = next(i for i, v in enumerate(values) if not math.isfinite(v))
    assert found == (f"v.{first_bad}", f"is not a finite number: {values[first_bad]!r}")


def test_check_vector_float32_boundary_is_exact():
    assert check_vector([FLOAT32_MAX, -FLOAT32_MAX, 0.0], 3, "v") is None
    # the smallest double that float32 rounds to infinity, and the largest it rounds to FLOAT32_MAX
    assert check_vector([0.0, 3.4028235677973366e38, 0.0], 3, "v") is not None
    assert check_vector([0.0, 3.4028235677973362e38, 0.0], 3, "v") is None
    assert check_vector([1, 2, 3], 3, "v") is None  # ints are numbers


def test_get_path_reaches_nested_properties():
    props = {"a": {"b": {"c": 5}}, "x": None, "list": [1]}
    assert get_path(props, "a.b.c") == 5
    assert get_path(props, "a.b") == {"c": 5}
    assert get_path(props, "a.zz") is None and get_path(props, "list.0") is None
    assert get_path(props, "x") is None and get_path(props, "x.y") is None
    assert get_path({"a.b": 1}, "a.b") is None  # dots always mean nesting

"""Object vectors and ids: weighted mean of field vectors, L2 normalisation, stable UUIDs from user ids."""

from __future__ import annotations

import math
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

#: Namespace of the UUIDv5 derived from a user id that is not itself a UUID.
OBJECT_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "polyvec:object")


def object_uuid(object_id: str) -> str:
    """The point UUID of a user id: the id itself when it is a UUID, else UUIDv5(OBJECT_NAMESPACE, id)."""
    try:
        return str(uuid.UUID(object_id))
    except ValueError:
        return str(uuid.uuid5(OBJECT_NAMESPACE, object_id))


def is_uuid(object_id: str) -> bool:
    try:
        uuid.UUID(object_id)
        return True
    except ValueError:
        return False


#: The largest float32; a larger magnitude would be stored as an infinity.
FLOAT32_MAX = float(np.finfo(np.float32).max)

_FLOATS = {float}


def l2_normalize(vector: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(vector))
    return vector / norm if norm > 0 else vector


def weighted_mean(vectors: Sequence[np.ndarray], weights: Sequence[float]) -> np.ndarray:
    """sum(w_i * v_i) / sum(w_i), then L2-normalised."""
    if not vectors:
        raise ValueError("no vectors to combine")
    stacked = np.stack([np.asarray(v, dtype=np.float64) for v in vectors])
    w = np.asarray(weights, dtype=np.float64).reshape(-1, 1)
    mean = (stacked * w).sum(axis=0) / w.sum()
    return l2_normalize(mean).astype(np.float32)


def check_vector(values: Sequence[float], dims: int, field: str) -> tuple[str, str] | None:
    """None when ``values`` is ``dims`` numbers that are finite as float32 (how vectors are stored).

    Else ``(field, problem)``: ``field`` names the bad element (``field.3``) or the vector itself (wrong
    length). Values beyond the float32 range (|v| > 3.4028235e38) are refused like NaN and infinities:
    stored, they would become infinities.
    """
    if len(values) != dims:
        return field, f"has {len(values)} dimensions, the collection expects {dims}"
    if set(map(type, values)) == _FLOATS:
        # Plain floats only (what a parsed request holds): checked in C, not element by element in
        # Python (that took ~0.25 ms per 384-d vector, most of a near_vector search's cost in a batch)
        as_float64 = np.asarray(values, dtype=np.float64)
        finite = np.isfinite(as_float64)
        if not finite.all():
            i = int(np.flatnonzero(~finite)[0])
            return f"{field}.{i}", f"is not a finite number: {values[i]!r}"
        with np.errstate(over="ignore"):
            as_float32 = as_float64.astype(np.float32)
    else:
        for i, v in enumerate(values):
            if not isinstance(v, int | float) or isinstance(v, bool):
                return f"{field}.{i}", f"is not a number: {v!r}"
            if isinstance(v, float) and not math.isfinite(v):  # (an int is finite, however large)
                return f"{field}.{i}", f"is not a finite number: {v!r}"
        with np.errstate(over="ignore"):
            try:
                as_float32 = np.asarray(values, dtype=np.float64).astype(np.float32)
            except OverflowError:  # an int too large for a float64
                big = [float(v) if abs(v) < 2**1000 else math.inf for v in values]
                as_float32 = np.array(big).astype(np.float32)
    overflow = np.flatnonzero(np.isinf(as_float32))
    if overflow.size:
        i = int(overflow[0])
        shown = repr(values[i]) if len(repr(values[i])) <= 24 else f"{repr(values[i])[:12]}..."
        return f"{field}.{i}", (f"{shown} is outside the float32 range (magnitude at most "
                                f"{FLOAT32_MAX!r}); vectors are stored as float32")
    return None


_MISSING = object()


def get_path(properties: Mapping[str, Any], path: str) -> Any:
    """Value at a dotted path (``a.b``) or None."""
    value: Any = properties
    for part in path.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part, _MISSING)
        if value is _MISSING:
            return None
    return value

"""The wire format of ``polyvec.inference.v1.Vectors``: little-endian float32, row-major, plus a count.

Used by the server (packing), the gateway's client (unpacking) and the tests.
"""

from __future__ import annotations

import numpy as np

from protos import inference_pb2


def pack_vectors(vectors: np.ndarray) -> inference_pb2.Vectors:
    """(n, d) float array -> Vectors{data: little-endian float32 row-major, count: n}."""
    vectors = np.ascontiguousarray(vectors, dtype="<f4")
    return inference_pb2.Vectors(data=vectors.tobytes(), count=int(vectors.shape[0]))


def unpack_vectors(message: inference_pb2.Vectors, dimensions: int) -> np.ndarray:
    """The inverse of :func:`pack_vectors`: a float32 (count, dimensions) array.

    ValueError when the data does not hold ``count`` vectors of ``dimensions`` floats.
    """
    if message.count == 0:
        return np.zeros((0, dimensions), dtype=np.float32)
    flat = np.frombuffer(message.data, dtype="<f4")
    if dimensions <= 0 or flat.size != message.count * dimensions:
        raise ValueError(f"got {flat.size} floats for {message.count} vectors of {dimensions} dimensions")
    return flat.reshape(message.count, dimensions).astype(np.float32, copy=False)

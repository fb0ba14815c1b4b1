"""The fast paths a scrolled page goes through answer exactly what the plain ones do."""

from __future__ import annotations

import uuid

from gateway.service import objects as obj
from gateway.storage.edge_store import id_strings


def test_id_strings_match_str_of_each_id():
    ids = [uuid.uuid4() for _ in range(50)] + [uuid.UUID(int=0), uuid.UUID(int=2**128 - 1), 7, 2**63]
    assert id_strings(ids) == [str(i) for i in ids]
    assert id_strings([]) == []


def test_id_and_properties_match_external_id_and_public_payload():
    point = str(uuid.UUID(int=5))
    payloads = [
        {obj.ID_KEY: "sku-1", "title": "a", "n": 1},
        {"title": "no stored id"},  # written outside the gateway: the UUID stands in
        {obj.ID_KEY: "sku-2", "_polyvec_other": 1, "keep": [1, 2]},  # other reserved keys are hidden too
        {obj.ID_KEY: 42},
        {},
        None,
    ]
    for payload in payloads:
        before = None if payload is None else dict(payload)
        assert obj.id_and_properties(point, payload) == (obj.external_id(point, payload),
                                                         obj.public_payload(payload))
        assert payload == before  # the store's payload is not changed

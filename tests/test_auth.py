"""MODEL_AUTH parsing: Marqo-like shape, secrets never shown."""

from __future__ import annotations

import json

import pytest

from services.inference.auth import ModelAuth, ModelAuthError, parse_model_auth

SECRET = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYEXAMPLEKEY"


def test_full_document():
    auth = parse_model_auth(
        json.dumps(
            {
                "s3": {
                    "aws_access_key_id": "AKIAEXAMPLE",
                    "aws_secret_access_key": SECRET,
                    "aws_session_token": "sess",
                    "endpoint_url": "http://127.0.0.1:9000",
                    "region": "eu-west-1",
                },
                "hf": {"token": "hf_secret_token"},
            }
        )
    )
    assert auth == ModelAuth(
        aws_access_key_id="AKIAEXAMPLE",
        aws_secret_access_key=SECRET,
        aws_session_token="sess",
        s3_endpoint_url="http://127.0.0.1:9000",
        region="eu-west-1",
        hf_token="hf_secret_token",
    )
    assert auth.has_s3_keys


@pytest.mark.parametrize("raw", [None, "", "   "])
def test_nothing_gives_none(raw):
    assert parse_model_auth(raw) is None


def test_hf_only_and_dict_input():
    auth = parse_model_auth({"hf": {"token": "hf_x"}})
    assert auth.hf_token == "hf_x" and auth.aws_access_key_id is None and not auth.has_s3_keys


def test_repr_and_str_mask_secrets():
    auth = parse_model_auth(
        {
            "s3": {
                "aws_access_key_id": "AKIAEXAMPLE",
                "aws_secret_access_key": SECRET,
                "aws_session_token": "sess-token",
                "region": "eu-west-1",
            },
            "hf": {"token": "hf_secret_token"},
        }
    )
    for text in (repr(auth), str(auth), f"{auth}", repr([auth])):
        for secret in ("AKIAEXAMPLE", SECRET, "sess-token", "hf_secret_token"):
            assert secret not in text
        assert "eu-west-1" in text and "***" in text


def test_unknown_keys_refused_with_suggestion_but_not_shown():
    """An unknown key may be a secret pasted in the wrong place: the error says where and what the
    known keys are, and suggests the closest one, but never quotes the key (issue 7, defect 9)."""
    hidden = "an unknown key (not shown: it may be a secret)"
    with pytest.raises(ModelAuthError) as err:
        parse_model_auth({"s3": {"aws_access_key_id": "a", "aws_secret_key": "b"}})
    assert f"MODEL_AUTH.s3: {hidden} (did you mean 'aws_secret_access_key'?)" in str(err.value)
    assert "aws_secret_key'" not in str(err.value)
    with pytest.raises(ModelAuthError) as err:
        parse_model_auth({"AKIAIOSFODNN7EXAMPLE": {}})
    assert f"MODEL_AUTH: {hidden}; known keys: s3, hf" in str(err.value) and "AKIA" not in str(err.value)
    with pytest.raises(ModelAuthError) as err:
        parse_model_auth({"hf": {"hf_abcdefghijklmnopqrstuvwx": "x"}})
    assert f"MODEL_AUTH.hf: {hidden}" in str(err.value) and "hf_abc" not in str(err.value)


def test_half_a_key_pair_refused():
    with pytest.raises(ModelAuthError, match="aws_secret_access_key is required"):
        parse_model_auth({"s3": {"aws_access_key_id": "a"}})
    with pytest.raises(ModelAuthError, match="aws_access_key_id is required"):
        parse_model_auth({"s3": {"aws_secret_access_key": "b"}})


def test_invalid_json_does_not_echo_the_document():
    with pytest.raises(ModelAuthError) as info:
        parse_model_auth('{"hf": {"token": "hf_leaky_secret"')
    assert "not valid JSON" in str(info.value) and "hf_leaky_secret" not in str(info.value)


def test_wrong_types_do_not_echo_values():
    with pytest.raises(ModelAuthError) as info:
        parse_model_auth({"s3": {"aws_access_key_id": 12345678, "aws_secret_access_key": "b"}})
    assert "aws_access_key_id must be a string" in str(info.value) and "12345678" not in str(info.value)
    with pytest.raises(ModelAuthError, match="MODEL_AUTH.s3 must be an object"):
        parse_model_auth({"s3": "key"})
    with pytest.raises(ModelAuthError, match="endpoint_url"):
        parse_model_auth({"s3": {"endpoint_url": "127.0.0.1:9000"}})
    with pytest.raises(ModelAuthError, match="JSON object"):
        parse_model_auth("[]")

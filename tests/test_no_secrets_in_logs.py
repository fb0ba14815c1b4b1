"""No secret in any log line, at any LOG_LEVEL, nor in any error, in either service (issue 7, defect 9).

* ``polyvec inference --download-only`` fetches a real model archive from S3 (moto's server on
  loopback) at every LOG_LEVEL, with MODEL_AUTH holding an access key id, a secret key, a session token,
  an endpoint URL with ``user:password@`` and a Hugging Face token; everything it prints is grepped.
* a MODEL_AUTH with a secret pasted as a key, and an endpoint that does not answer: the one-line
  errors do not show the secrets.
* ``polyvec gateway`` at every LOG_LEVEL with API keys and a Qdrant key, answering requests that carry
  a right and a wrong key; and with a QDRANT_URL holding a password.
* in-process, botocore forced to DEBUG (what a user could do by hand): every log record of the
  download is already redacted when a handler gets it.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import boto3
import httpx
import pytest

from services import logging_setup
from services.inference.auth import ModelAuth, parse_model_auth, secret_values
from services.inference.model_spec import parse_model_properties
from services.up import free_port
from tests.model_factories import build_sentence_transformers_zip

REPO = Path(__file__).resolve().parent.parent
LEVELS = ["DEBUG", "INFO", "WARNING", "ERROR"]

KEY_ID = "AKIAPOLYVECTEST0KEY1"
SECRET_KEY = "polyvecSecretAccessKey/0123456789abcdefXYZ"
SESSION_TOKEN = "IQoJb3JpZ2luX2VjPolyvecSessionToken0123456789abcdefQRST"
ENDPOINT_USER = "s3admin"
ENDPOINT_PASSWORD = "s3cr3tEndpointPassw0rd"
HF_TOKEN = "hf_polyvecHuggingFaceToken0123456789"
PASTED_AS_KEY = "wJalrXUtnFEMIK7MDENGbPxRfiCYPASTEDKEY"
API_KEY = "pv-api-key-0123456789abcdef"
WRONG_API_KEY = "pv-wrong-key-9876543210fedcba"
QDRANT_KEY = "qdrant-key-0123456789abcdef"
QDRANT_PASSWORD = "qdrantPassw0rd0123"
SECRETS = [KEY_ID, SECRET_KEY, SESSION_TOKEN, ENDPOINT_PASSWORD, HF_TOKEN, PASTED_AS_KEY, API_KEY,
           WRONG_API_KEY, QDRANT_KEY, QDRANT_PASSWORD]


def leaks(text: str) -> list[str]:
    """The secrets (or recognisable parts of them) found in ``text``."""
    found = [s for s in SECRETS if s in text or s[:12] in text]
    if f"{ENDPOINT_USER}:" in text:
        found.append(f"{ENDPOINT_USER}:<password>")
    return found


def polyvec(*args: str) -> list[str]:
    script = Path(sys.executable).parent / "polyvec"
    return [str(script), *args] if script.is_file() else [sys.executable, "-m", "services.cli", *args]


def clean_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MODEL", "QDRANT_", "API_KEYS"))}
    env.update({"PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "AWS_EC2_METADATA_DISABLED": "true",
                "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
                "AWS_CONFIG_FILE": str(tmp_path / "none"), "MODEL_CACHE_DIR": str(tmp_path / "cache")})
    env.update(extra)
    return env


class Moto:
    """moto's S3 on loopback (any credentials are accepted: the test is about what gets printed)."""

    def __init__(self, archive: Path) -> None:
        from moto.server import ThreadedMotoServer

        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.server.start()
        host, port = self.server.get_host_and_port()
        self.address = f"{host}:{port}"
        s3 = boto3.client("s3", endpoint_url=f"http://{self.address}", aws_access_key_id="setup",
                          aws_secret_access_key="setup", region_name="us-east-1")
        s3.create_bucket(Bucket="models")
        s3.put_object(Bucket="models", Key="st/tiny-st.zip", Body=archive.read_bytes())

    @property
    def endpoint_with_password(self) -> str:
        return f"http://{ENDPOINT_USER}:{ENDPOINT_PASSWORD}@{self.address}"

    def close(self) -> None:
        self.server.stop()


@pytest.fixture(scope="module")
def moto(tmp_path_factory):
    world = Moto(build_sentence_transformers_zip(tmp_path_factory.mktemp("secrets-model")))
    yield world
    world.close()


MODEL_PROPERTIES = json.dumps({"type": "sentence_transformers", "name": "tiny-st",
                               "modelLocation": {"s3": {"Bucket": "models", "Key": "st/tiny-st.zip"},
                                                 "authRequired": True}})


def model_auth(endpoint: str, **s3_extra: str) -> str:
    return json.dumps({"s3": {"aws_access_key_id": KEY_ID, "aws_secret_access_key": SECRET_KEY,
                              "aws_session_token": SESSION_TOKEN, "endpoint_url": endpoint,
                              "region": "us-east-1", **s3_extra},
                       "hf": {"token": HF_TOKEN}})


# --------------------------------------------------------------------------------------------------
# the inference service
# --------------------------------------------------------------------------------------------------

def test_inference_download_logs_no_secret_at_any_level(moto, tmp_path):
    """One real S3 download per LOG_LEVEL (the four processes run side by side)."""
    procs = {}
    for level in LEVELS:
        env = clean_env(tmp_path / level, LOG_LEVEL=level, MODEL_PROPERTIES=MODEL_PROPERTIES,
                        MODEL_AUTH=model_auth(moto.endpoint_with_password),
                        AWS_SECRET_ACCESS_KEY=SECRET_KEY)  # a library-read variable is masked too
        procs[level] = subprocess.Popen(polyvec("inference", "--download-only"), env=env, cwd=REPO,
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    outputs = {}
    try:
        for level, proc in procs.items():
            outputs[level] = proc.communicate(timeout=600)[0]
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    for level, output in outputs.items():
        assert procs[level].returncode == 0, (level, output[-3000:])
        assert leaks(output) == [], (level, output)
    # the download really happened, and was logged, at the levels that show INFO
    for level in ("DEBUG", "INFO"):
        assert "downloading s3://models/st/tiny-st.zip" in outputs[level], outputs[level][-3000:]
        assert "is ready" in outputs[level]


def test_inference_errors_show_no_secret(moto, tmp_path):
    pasted = json.dumps({"s3": {PASTED_AS_KEY: SECRET_KEY, "aws_access_key_id": KEY_ID}})
    bad_key = subprocess.run(polyvec("inference", "--download-only"), cwd=REPO, capture_output=True,
                             text=True, timeout=120,
                             env=clean_env(tmp_path, LOG_LEVEL="DEBUG", MODEL_AUTH=pasted,
                                           MODEL_PROPERTIES=MODEL_PROPERTIES))
    assert bad_key.returncode == 2
    assert "MODEL_AUTH.s3: an unknown key (not shown: it may be a secret)" in bad_key.stderr, bad_key.stderr
    closed = f"http://{ENDPOINT_USER}:{ENDPOINT_PASSWORD}@127.0.0.1:{free_port()}"
    unreachable = subprocess.run(
        polyvec("inference", "--download-only"), cwd=REPO, capture_output=True, text=True, timeout=300,
        env=clean_env(tmp_path, LOG_LEVEL="DEBUG", MODEL_PROPERTIES=MODEL_PROPERTIES,
                      MODEL_AUTH=model_auth(closed), AWS_MAX_ATTEMPTS="1"))
    assert unreachable.returncode == 2, unreachable.stderr[-2000:]
    assert "cannot load model" in unreachable.stderr
    for proc in (bad_key, unreachable):
        assert leaks(proc.stdout + proc.stderr) == [], proc.stdout + proc.stderr


def test_model_auth_secrets_and_errors():
    raw = model_auth("http://u:pw-0123456789@host:9000", region="eu-west-1")
    values = secret_values(raw)
    assert {KEY_ID, SECRET_KEY, SESSION_TOKEN, HF_TOKEN, "u", "pw-0123456789"} <= set(values)
    assert "eu-west-1" not in values and "http://u:pw-0123456789@host:9000" not in values
    assert PASTED_AS_KEY in secret_values(json.dumps({"s3": {PASTED_AS_KEY: "x"}}))
    assert "not-json-secret-value" in " ".join(secret_values("{not-json-secret-value"))
    with pytest.raises(ValueError) as err:
        parse_model_auth(json.dumps({"s3": {"aws_acess_key_id": "x"}}))
    message = str(err.value)
    assert "aws_acess_key_id" not in message and "did you mean 'aws_access_key_id'?" in message
    with pytest.raises(ValueError) as err:
        parse_model_auth(json.dumps({PASTED_AS_KEY: {}}))
    assert PASTED_AS_KEY not in str(err.value)


@pytest.fixture
def redacting():
    """install_redaction() for one test, then the previous record factory and secrets again."""
    factory = logging.getLogRecordFactory()
    secrets = logging_setup._secrets
    logging_setup.install_redaction()
    yield
    logging.setLogRecordFactory(factory)
    logging_setup._secrets = secrets


def test_every_record_is_redacted_even_with_botocore_forced_to_debug(moto, tmp_path, caplog, redacting,
                                                                     monkeypatch):
    from services.inference.artifacts import resolve_artifact

    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    logging_setup.add_secrets([HF_TOKEN])  # the rest is masked by its shape alone
    caplog.set_level(logging.DEBUG)
    for name in ("botocore", "boto3", "urllib3", "s3transfer"):
        caplog.set_level(logging.DEBUG, logger=name)
    auth = ModelAuth(aws_access_key_id=KEY_ID, aws_secret_access_key=SECRET_KEY,
                     aws_session_token=SESSION_TOKEN, s3_endpoint_url=moto.endpoint_with_password,
                     hf_token=HF_TOKEN)
    spec = parse_model_properties({"type": "sentence_transformers", "name": "x", "authRequired": True,
                                   "modelLocation": {"s3": {"Bucket": "models", "Key": "st/tiny-st.zip"}}})
    logging.getLogger("polyvec.test").info("configured with %s", HF_TOKEN)
    assert resolve_artifact(spec, auth, tmp_path / "cache").is_dir()
    botocore_lines = [r for r in caplog.records if r.name.startswith("botocore")]
    assert len(botocore_lines) > 20  # botocore really talked at DEBUG
    everything = caplog.text + "\n".join(r.getMessage() for r in caplog.records)
    assert any("Credential=***" in r.getMessage() for r in botocore_lines), everything[-5000:]
    assert leaks(everything) == [], everything[-5000:]


def test_redact_masks_credentials_by_their_shape():
    cases = {
        "GET http://user:pass-word@host:9000/x": "GET http://***@host:9000/x",
        "https://TOKEN123@github.com/a": "https://***@github.com/a",
        "Authorization: AWS4-HMAC-SHA256 Credential=AKIAABCDEFGHIJKLMNOP/2024/us-east-1/s3/aws4_request, "
        "SignedHeaders=host, Signature=0123abcd": "Credential=***, SignedHeaders=host, Signature=***",
        "{'x-amz-security-token': b'FQoGZXIvYXdzEJr//////////wEa', 'X-Amz-Date': b'2024'}":
            "{'x-amz-security-token': b'***', 'X-Amz-Date': b'2024'}",
        "https://b.s3.amazonaws.com/k?X-Amz-Credential=AKIA1%2F2&X-Amz-Security-Token=abc&X-Amz-Signature=ff":
            "X-Amz-Credential=***&X-Amz-Security-Token=***&X-Amz-Signature=***",
        "headers: Authorization: Bearer pv-key-123456": "Authorization: ***",
        "x-api-key=pv-key-123456; api-key: qkey-987654": "x-api-key=***; api-key: ***",
        "key id ASIAABCDEFGHIJKLMNOP and hf_abcdefghijklmnopqrstu": "key id ASIA*** and hf_***",
    }
    for text, expected in cases.items():
        assert expected in logging_setup.redact(text), (text, logging_setup.redact(text))
    # ordinary lines are left alone
    for text in ("max_text_tokens=77, tokens: 5",
                 "sha256 mismatch for localpath /m/w.pt: expected 0a, got 1b",
                 "serving tiny (sentence_transformers, 32 dims) on cpu/fp32", "GET http://127.0.0.1:8080/meta"):
        assert logging_setup.redact(text) == text


def test_configured_secrets_are_masked_in_any_form(redacting):
    logging_setup.add_secrets(["My$ecret/Value=1", "abc"])  # too short to be masked everywhere
    assert logging_setup.redact("v=My$ecret/Value=1 q=My%24ecret%2FValue%3D1 abc") == "v=*** q=*** abc"


# --------------------------------------------------------------------------------------------------
# the gateway
# --------------------------------------------------------------------------------------------------

def run_gateway(tmp_path: Path, level: str, requests, **env_extra: str) -> str:
    port = free_port()
    env = clean_env(tmp_path, LOG_LEVEL=level, API_KEYS=f"{API_KEY},other-key-0000",
                    QDRANT_API_KEY=QDRANT_KEY, DATA_DIR=str(tmp_path / f"data-{level}"), HTTP_PORT=str(port),
                    GRPC_PORT="0", HOST="127.0.0.1", **env_extra)
    proc = subprocess.Popen(polyvec("gateway"), env=env, cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while proc.poll() is None:
            try:
                if httpx.get(base + "/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, "the gateway did not start"
                time.sleep(0.2)
        if proc.poll() is None:
            with httpx.Client(base_url=base, timeout=30) as client:
                requests(client)
            proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return out


@pytest.mark.parametrize("level", LEVELS)
def test_gateway_logs_no_secret_at_any_level(tmp_path, level):
    answers = {}

    def requests(client: httpx.Client) -> None:
        answers["ok"] = client.get("/v1/collections", headers={"Authorization": f"Bearer {API_KEY}"})
        answers["ok2"] = client.get("/v1/collections", headers={"x-api-key": API_KEY})
        answers["wrong"] = client.get("/v1/collections", headers={"Authorization": f"Bearer {WRONG_API_KEY}"})
        answers["wrong2"] = client.post("/v1/collections", json={"name": "x"},
                                        headers={"x-api-key": WRONG_API_KEY})

    out = run_gateway(tmp_path, level, requests)
    assert answers["ok"].status_code == 200 and answers["ok2"].status_code == 200
    assert answers["wrong"].status_code == 401 and answers["wrong2"].status_code == 401
    everything = out + "".join(r.text for r in answers.values())
    assert leaks(everything) == [], everything


def test_gateway_with_a_qdrant_password_shows_it_nowhere(tmp_path):
    answers = {}

    def requests(client: httpx.Client) -> None:
        answers["list"] = client.get("/v1/collections", headers={"x-api-key": API_KEY})
        answers["ready"] = client.get("/readyz")

    url = f"http://admin:{QDRANT_PASSWORD}@127.0.0.1:{free_port()}"
    out = run_gateway(tmp_path, "DEBUG", requests, QDRANT_URL=url)
    everything = out + "".join(r.text for r in answers.values())
    assert "127.0.0.1" in out  # it did say where the store is
    assert leaks(everything) == [] and "admin:" not in everything, everything

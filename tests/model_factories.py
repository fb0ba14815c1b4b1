"""Tiny real models with seeded random weights, written to disk the way users ship them.

Every builder takes a target folder, writes the model there, and returns paths
(and dimensions); each runs in well under two seconds on a CPU. The models are
real: the same library code loads and runs them as for a pretrained model, only
the weights are random and the sizes tiny.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import NamedTuple

from services.inference.loaders.torchvision_compat import ensure_torchvision_importable

TINY_OPEN_CLIP_NAME = "polyvec-tiny-clip"
TINY_OPEN_CLIP_DIMS = 16
TINY_OPEN_CLIP_IMAGE = 32
TINY_OPEN_CLIP_CONFIG = {
    "embed_dim": TINY_OPEN_CLIP_DIMS,
    "vision_cfg": {"image_size": TINY_OPEN_CLIP_IMAGE, "layers": 2, "width": 32, "head_width": 16,
                   "patch_size": 8, "mlp_ratio": 2.0},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2,
                 "mlp_ratio": 2.0},
}
TINY_BERT_DIMS = 32
TINY_ST_MAX_SEQ_LENGTH = 16
TINY_HF_CLIP_DIMS = 16
TINY_HF_IMAGE = 32

_CORPUS = (
    "a cat sits on the mat . a kitten on a rug . a dog runs in the park . the stock market crash "
    "hit the bank . a photo of a red car and a blue house . people walk by the river at night"
)


class OpenClipArtifacts(NamedTuple):
    config_path: Path  # architecture config JSON (its stem is the architecture name)
    checkpoint_path: Path  # torch state_dict
    dims: int


def _tiny_open_clip_model(seed: int):
    ensure_torchvision_importable()
    import torch
    from open_clip.model import CLIP

    torch.manual_seed(seed)
    model = CLIP(**json.loads(json.dumps(TINY_OPEN_CLIP_CONFIG)))
    return model.eval()


def build_open_clip_checkpoint(target: Path, *, seed: int = 0,
                               name: str = TINY_OPEN_CLIP_NAME) -> OpenClipArtifacts:
    """An architecture config ``<name>.json`` plus a ``<name>.pt`` state_dict checkpoint.

    Load it with a spec ``{"type": "open_clip", "name": "<config path>", "localpath": "<checkpoint>"}``.
    """
    import torch

    target = Path(target)
    target.mkdir(parents=True, exist_ok=True)
    config_path = target / f"{name}.json"
    config_path.write_text(json.dumps(TINY_OPEN_CLIP_CONFIG, indent=1), encoding="utf-8")
    checkpoint = target / f"{name}.pt"
    torch.save(_tiny_open_clip_model(seed).state_dict(), checkpoint)
    return OpenClipArtifacts(config_path, checkpoint, TINY_OPEN_CLIP_DIMS)


def build_open_clip_folder(target: Path, *, seed: int = 0,
                           preprocess_cfg: dict | None = None) -> Path:
    """An open_clip "local-dir" folder: ``open_clip_config.json`` (model_cfg + preprocess_cfg) and weights."""
    import torch

    target = Path(target)
    target.mkdir(parents=True, exist_ok=True)
    config = {"model_cfg": TINY_OPEN_CLIP_CONFIG,
              "preprocess_cfg": preprocess_cfg or {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5],
                                                   "interpolation": "bicubic", "resize_mode": "squash"}}
    (target / "open_clip_config.json").write_text(json.dumps(config, indent=1), encoding="utf-8")
    torch.save(_tiny_open_clip_model(seed).state_dict(), target / "open_clip_pytorch_model.bin")
    return target


def _bert_vocab() -> list[str]:
    words = sorted(set(_CORPUS.split()))
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)] + [str(d) for d in range(10)] + list(".,!?'-")
    return (["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + letters + ["##" + ch for ch in letters]
            + [w for w in words if w not in letters])


def build_bert_folder(target: Path, *, seed: int = 0) -> Path:
    """A tiny BERT (hidden 32, 2 layers) and its WordPiece tokenizer, saved with save_pretrained."""
    ensure_torchvision_importable()
    import torch
    from transformers import BertConfig, BertModel, BertTokenizer

    target = Path(target)
    target.mkdir(parents=True, exist_ok=True)
    vocab = _bert_vocab()
    tokenizer = BertTokenizer(vocab={tok: i for i, tok in enumerate(vocab)}, do_lower_case=True)
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(vocab), hidden_size=TINY_BERT_DIMS, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=64)
    BertModel(config).eval().save_pretrained(target)
    tokenizer.save_pretrained(target)
    return target


def build_sentence_transformers_folder(target: Path, *, seed: int = 0, normalize: bool = True,
                                       max_seq_length: int = TINY_ST_MAX_SEQ_LENGTH) -> Path:
    """A sentence-transformers folder: Transformer (tiny BERT) + mean Pooling (+ Normalize)."""
    ensure_torchvision_importable()
    from sentence_transformers import SentenceTransformer

    try:
        from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer
    except ImportError:  # sentence-transformers < 6
        from sentence_transformers.models import Normalize, Pooling, Transformer

    target = Path(target)
    bert = build_bert_folder(target.parent / (target.name + "-bert"), seed=seed)
    modules = [Transformer(str(bert), max_seq_length=max_seq_length),
               Pooling(TINY_BERT_DIMS, pooling_mode="mean")]
    if normalize:
        modules.append(Normalize())
    SentenceTransformer(modules=modules, device="cpu").save(str(target))
    return target


def zip_folder(folder: Path, archive: Path) -> Path:
    """Zip a folder's files at the archive root."""
    folder, archive = Path(folder), Path(archive)
    archive.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                zf.write(path, path.relative_to(folder).as_posix())
    return archive


def build_sentence_transformers_zip(target: Path, *, seed: int = 0) -> Path:
    """The sentence-transformers folder above, zipped (``<target>/tiny-st.zip``)."""
    target = Path(target)
    folder = build_sentence_transformers_folder(target / "tiny-st", seed=seed)
    return zip_folder(folder, target / "tiny-st.zip")


def _clip_bpe_vocab() -> tuple[dict[str, int], list[str]]:
    """A minimal byte-level BPE vocabulary in CLIP's format: each byte, alone and word-final, few merges."""
    from tokenizers import pre_tokenizers

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tokens = list(alphabet) + [ch + "</w>" for ch in alphabet]
    merges = ["c a", "ca t</w>", "d o", "do g</w>", "t h", "th e</w>", "o n</w>", "a t</w>"]
    for merge in merges:
        tokens.append(merge.replace(" ", ""))
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return {tok: i for i, tok in enumerate(tokens)}, merges


def build_hf_clip_folder(target: Path, *, seed: int = 0) -> Path:
    """A tiny transformers CLIPModel with a CLIP BPE tokenizer and CLIPImageProcessor (save_pretrained)."""
    ensure_torchvision_importable()
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    target = Path(target)
    target.mkdir(parents=True, exist_ok=True)
    vocab, merges = _clip_bpe_vocab()
    tokenizer = CLIPTokenizer(vocab=vocab, merges=[tuple(m.split()) for m in merges], model_max_length=77)
    image_processor = CLIPImageProcessor(size={"shortest_edge": TINY_HF_IMAGE},
                                         crop_size={"height": TINY_HF_IMAGE, "width": TINY_HF_IMAGE})
    config = CLIPConfig(
        text_config={"vocab_size": len(vocab), "hidden_size": 32, "intermediate_size": 64,
                     "num_hidden_layers": 2, "num_attention_heads": 2, "max_position_embeddings": 77,
                     "bos_token_id": vocab["<|startoftext|>"], "eos_token_id": vocab["<|endoftext|>"],
                     "pad_token_id": vocab["<|endoftext|>"]},
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                       "num_attention_heads": 2, "image_size": TINY_HF_IMAGE, "patch_size": 8},
        projection_dim=TINY_HF_CLIP_DIMS,
    )
    torch.manual_seed(seed)
    CLIPModel(config).eval().save_pretrained(target)
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(target)
    return target


def build_hf_siglip_folder(target: Path, *, seed: int = 0) -> Path:
    """A tiny transformers SiglipModel (text max 16 positions) with a byte-level BPE tokenizer."""
    ensure_torchvision_importable()
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import (
        SiglipConfig,
        SiglipImageProcessor,
        SiglipModel,
        SiglipProcessor,
        SiglipTextConfig,
        SiglipVisionConfig,
    )
    from transformers.tokenization_utils_tokenizers import TokenizersBackend

    target = Path(target)
    target.mkdir(parents=True, exist_ok=True)
    vocab, merges = _clip_bpe_vocab()
    vocab = {k: v for k, v in vocab.items() if not k.startswith("<|")}
    vocab["<pad>"] = len(vocab)
    vocab["<unk>"] = len(vocab)
    vocab["</s>"] = len(vocab)
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[tuple(m.split()) for m in merges],
                                   end_of_word_suffix="</w>", unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    tokenizer = TokenizersBackend(tokenizer_object=backend, pad_token="<pad>", unk_token="<unk>",
                                  eos_token="</s>", model_max_length=16)
    image_processor = SiglipImageProcessor(size={"height": TINY_HF_IMAGE, "width": TINY_HF_IMAGE})
    config = SiglipConfig(
        text_config=SiglipTextConfig(
            vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=2, max_position_embeddings=16, pad_token_id=vocab["<pad>"],
            eos_token_id=vocab["</s>"], bos_token_id=vocab["</s>"]),
        vision_config=SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=2, image_size=TINY_HF_IMAGE, patch_size=8),
    )
    torch.manual_seed(seed)
    SiglipModel(config).eval().save_pretrained(target)
    SiglipProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(target)
    return target


def install_in_hub_cache(folder: Path, hub_cache: Path, repo_id: str) -> Path:
    """Lay a model folder out as the Hugging Face hub cache does, so ``repo_id`` resolves offline.

    ``<hub_cache>/models--ORG--NAME/refs/main`` names a commit whose ``snapshots/<commit>/`` holds the
    files: the layout huggingface_hub reads with HF_HUB_OFFLINE=1. Returns the snapshot folder.
    """
    import hashlib
    import shutil

    folder, hub_cache = Path(folder), Path(hub_cache)
    repo = hub_cache / ("models--" + repo_id.replace("/", "--"))
    commit = hashlib.sha1(repo_id.encode()).hexdigest()
    snapshot = repo / "snapshots" / commit
    shutil.copytree(folder, snapshot, dirs_exist_ok=True)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    return snapshot


def build_sentence_transformers_clip_folder(target: Path, *, seed: int = 0) -> Path:
    """A CLIP-style sentence-transformers model (text and images), saved with ``SentenceTransformer.save``."""
    ensure_torchvision_importable()
    from sentence_transformers import SentenceTransformer

    target = Path(target)
    clip = build_hf_clip_folder(target.parent / (target.name + "-hf"), seed=seed)
    SentenceTransformer(str(clip), device="cpu").save(str(target))
    return target

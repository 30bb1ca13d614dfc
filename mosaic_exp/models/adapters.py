"""Architecture adapters: where the decoder layers, linears and norms of a model family live.

One adapter per family (not one script per model). Llama covers LLaMA-2/3.x and SmolLM2; Qwen3's
decoder layer has the same module names (plus q_norm/k_norm, applied after the projections, so
smoothing into input_layernorm stays exact).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn


@dataclass(frozen=True)
class ArchAdapter:
    name: str
    # Linears of one decoder layer, in the order they are quantized; each inner tuple shares its input.
    linear_groups: tuple[tuple[str, ...], ...]
    # (norm, linears fed by it): where SmoothQuant factors can be folded into the norm weight.
    smooth_groups: tuple[tuple[str, tuple[str, ...]], ...]

    def decoder_layers(self, model: nn.Module) -> nn.ModuleList:
        return model.model.layers

    def embed_tokens(self, model: nn.Module) -> nn.Module:
        return model.model.embed_tokens

    def linear_names(self) -> list[str]:
        return [n for group in self.linear_groups for n in group]

    def linears(self, layer: nn.Module) -> dict[str, nn.Linear]:
        return {n: layer.get_submodule(n) for n in self.linear_names()}


_LLAMA_LIKE = dict(
    linear_groups=(
        ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
        ("self_attn.o_proj",),
        ("mlp.gate_proj", "mlp.up_proj"),
        ("mlp.down_proj",),
    ),
    smooth_groups=(
        ("input_layernorm", ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj")),
        ("post_attention_layernorm", ("mlp.gate_proj", "mlp.up_proj")),
    ),
)

ADAPTERS: dict[str, ArchAdapter] = {
    "llama": ArchAdapter(name="llama", **_LLAMA_LIKE),
    "qwen3": ArchAdapter(name="qwen3", **_LLAMA_LIKE),
}


def get_adapter(arch: str) -> ArchAdapter:
    if arch not in ADAPTERS:
        raise ValueError(f"unknown architecture {arch!r}; supported: {', '.join(ADAPTERS)}")
    return ADAPTERS[arch]

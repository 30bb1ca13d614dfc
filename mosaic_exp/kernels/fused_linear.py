"""Linears that share their input (q / k / v, gate / up) run as one kernel launch over the stacked weight.

HF decoder layers call ``q_proj(h)``, ``k_proj(h)``, ``v_proj(h)`` (and ``gate_proj(x)``, ``up_proj(x)``) one after
the other on the same tensor. :class:`SharedInputLinears` holds one :class:`QuantLinear` of the stacked weight
(:func:`mosaic_exp.formats.concat_out_features`); each original linear is replaced by a :class:`FusedSlice` that
asks the group for its slice of the output. The first slice called with a new input runs the stacked kernel once;
the others return their column slice of that result (views, no copy). The result is dropped once every slice has
taken its part, so no activation outlives the layer. A slice called with another input than the pending one
(another tensor, or the same tensor modified in place since) recomputes: the fusion never returns a stale output.
At decode, three launches over 4096 -> 4096 / 1024 / 1024 become one over 4096 -> 6144 (and gate / up one over
4096 -> 2 x 14336): fewer launches and the shapes the kernels are tuned for.
"""

from __future__ import annotations

import torch
from torch import nn

from mosaic_exp.formats import QuantizedWeight, concat_out_features
from mosaic_exp.kernels.quant_linear import QuantLinear


class SharedInputLinears(nn.Module):
    def __init__(self, parts: list[QuantizedWeight], *, variant: str, dtype: torch.dtype,
                 device: torch.device | str | None = None):
        super().__init__()
        self.sizes = [p.out_features for p in parts]
        self.fused = QuantLinear.from_quantized(concat_out_features(parts), variant=variant, dtype=dtype,
                                                device=device)
        self._key: tuple | None = None
        self._outs: list[torch.Tensor] | None = None
        self._taken: set[int] = set()

    def slice_output(self, i: int, x: torch.Tensor) -> torch.Tensor:
        key = (id(x), x._version, x.data_ptr(), tuple(x.shape))
        if self._outs is None or key != self._key or i in self._taken:
            self._outs = list(torch.split(self.fused(x), self.sizes, dim=-1))
            self._key, self._taken = key, set()
        out = self._outs[i]
        self._taken.add(i)
        if len(self._taken) == len(self.sizes):  # every slice served: drop the references
            self._outs, self._key, self._taken = None, None, set()
        return out

    @property
    def last_launch(self) -> tuple[str, ...]:
        return self.fused.last_launch

    @property
    def last_kernel(self) -> str | None:
        k = self.fused.last_kernel
        return None if k is None else f"{k} [fused {'+'.join(map(str, self.sizes))}]"


class FusedSlice(nn.Module):
    """Stands where one of the group's original linears was; returns its columns of the stacked output."""

    def __init__(self, group: SharedInputLinears, index: int):
        super().__init__()
        self.index = index
        self.in_features, self.out_features = group.fused.in_features, group.sizes[index]
        object.__setattr__(self, "_group", group)  # not a child: the group is registered once, on the parent

    @property
    def group(self) -> SharedInputLinears:
        return self._group

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._group.slice_output(self.index, x)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, slice {self.index} of "
                f"{self._group.sizes}")

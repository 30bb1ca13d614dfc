"""QuantizedWeight: the one container of a quantized linear layer.

Shared by the reference matmul, the model swap (QuantLinear) and the CUDA kernels, which
re-pack it into their own layouts. Everything stored counts towards ``bits_per_weight``.

Layout (W is [N, K] = [out_features, in_features]):
  base_qweight  uint8 [N, ceil(K/2)]      4-bit codes packed two per byte (low nibble = even k);
                                          for bits != 4: uint8 [N, K] unpacked codes
  base_scales   fp16/fp32 [N, G]          per-group scales (G = ceil(K/group_size), or 1)
  base_zeros    fp16/fp32 [N, G]          per-group zero points (2^(bits-1) when symmetric)
  res_index     int32 [B, 2]              (block_row, block_col) of the kept residual blocks,
                                          sorted row-major; block (r, c) covers rows
                                          [r*bh, min((r+1)*bh, N)) and cols [c*bw, min((c+1)*bw, K))
  res_qweight   uint8 [B, bh, ceil(bw/2)] 4-bit symmetric residual codes (code-8), zero-padded at edges
  res_scales    fp16/fp32 [B, bh] or [B, 1]  residual scale per row of each block (default) or per block
Dequantized: W_hat = (q - z) * s  +  scatter(blocks, (q_r - 8) * s_r).

ZipperQuant's layers are a :class:`BitSplitWeight` instead: a symmetric 4-bit QuantizedWeight (the dense
low-order bits) plus the sparse high-order bits in CSR form, sharing its scales.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch

from mosaic_exp.quant.quantizer import (
    dequantize_weight,
    effective_group_size,
    num_groups,
    pack_int4,
    unpack_int4,
)

RESIDUAL_BITS = 4
RESIDUAL_ZERO = 2 ** (RESIDUAL_BITS - 1)


def empty_residual(block_shape: tuple[int, int], scale_dtype: torch.dtype, device=None) -> dict[str, torch.Tensor]:
    """The residual fields of a QuantizedWeight with no kept block (res_index / res_qweight / res_scales)."""
    bh, bw = int(block_shape[0]), int(block_shape[1])
    return {"res_index": torch.zeros(0, 2, dtype=torch.int32, device=device),
            "res_qweight": torch.zeros(0, bh, math.ceil(bw / 2), dtype=torch.uint8, device=device),
            "res_scales": torch.zeros(0, bh, dtype=scale_dtype, device=device)}


@dataclass
class QuantizedWeight:
    out_features: int
    in_features: int
    bits: int
    group_size: int
    symmetric: bool
    base_qweight: torch.Tensor
    base_scales: torch.Tensor
    base_zeros: torch.Tensor
    block_shape: tuple[int, int] = (128, 128)
    res_index: torch.Tensor = field(default_factory=lambda: torch.zeros(0, 2, dtype=torch.int32))
    res_qweight: torch.Tensor = field(default_factory=lambda: torch.zeros(0, 0, 0, dtype=torch.uint8))
    res_scales: torch.Tensor = field(default_factory=lambda: torch.zeros(0, 0))
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        n, k = self.out_features, self.in_features
        if not 2 <= self.bits <= 8:
            raise ValueError(f"bits must be in 2..8, got {self.bits}")
        exp_cols = math.ceil(k / 2) if self.bits == 4 else k
        if tuple(self.base_qweight.shape) != (n, exp_cols):
            raise ValueError(f"base_qweight shape {tuple(self.base_qweight.shape)} != {(n, exp_cols)} "
                             f"for N={n}, K={k}, bits={self.bits}")
        g = num_groups(k, self.group_size)
        for name in ("base_scales", "base_zeros"):
            t = getattr(self, name)
            if tuple(t.shape) != (n, g):
                raise ValueError(f"{name} shape {tuple(t.shape)} != {(n, g)} (N={n}, groups={g})")
        self.block_shape = (int(self.block_shape[0]), int(self.block_shape[1]))
        bh, bw = self.block_shape
        if bh <= 0 or bw <= 0:
            raise ValueError(f"block_shape must be positive, got {self.block_shape}")
        nb = self.res_index.shape[0]
        if nb:
            if tuple(self.res_qweight.shape) != (nb, bh, math.ceil(bw / 2)):
                raise ValueError(f"res_qweight shape {tuple(self.res_qweight.shape)} != "
                                 f"{(nb, bh, math.ceil(bw / 2))}")
            if tuple(self.res_scales.shape) not in ((nb, bh), (nb, 1)):
                raise ValueError(f"res_scales shape {tuple(self.res_scales.shape)} is neither {(nb, bh)} "
                                 f"(per block row) nor {(nb, 1)} (per block)")

    # ------------------------------------------------------------------ shapes / costs
    @property
    def grid_shape(self) -> tuple[int, int]:
        bh, bw = self.block_shape
        return math.ceil(self.out_features / bh), math.ceil(self.in_features / bw)

    @property
    def num_residual_blocks(self) -> int:
        return int(self.res_index.shape[0])

    @property
    def residual_fraction(self) -> float:
        r, c = self.grid_shape
        return self.num_residual_blocks / (r * c)

    def bits_per_weight(self, scale_bits: int = 16, index_bits: int = 32) -> float:
        """Everything stored, per weight of W: base codes + scales (+ zeros) + residual
        codes + residual scales + block indices."""
        n, k = self.out_features, self.in_features
        g = num_groups(k, self.group_size)
        total = n * k * self.bits + n * g * scale_bits
        if not self.symmetric:
            total += n * g * self.bits
        bh, bw = self.block_shape
        nb = self.num_residual_blocks
        total += nb * (bh * bw * RESIDUAL_BITS + 2 * index_bits) + self.res_scales.numel() * scale_bits
        return total / (n * k)

    # ------------------------------------------------------------------ dequantization
    def base_codes(self) -> torch.Tensor:
        if self.bits == 4:
            return unpack_int4(self.base_qweight, self.in_features)
        return self.base_qweight

    def dequantize_base(self) -> torch.Tensor:
        return dequantize_weight(self.base_codes(), self.base_scales, self.base_zeros, self.group_size)

    def dequantize_residual(self) -> torch.Tensor:
        """Dense [N, K] float32 matrix holding the dequantized kept residual blocks (0 elsewhere)."""
        n, k = self.out_features, self.in_features
        bh, bw = self.block_shape
        out = torch.zeros(n, k, device=self.base_scales.device)
        if not self.num_residual_blocks:
            return out
        codes = unpack_int4(self.res_qweight, bw).float() - RESIDUAL_ZERO
        vals = codes * self.res_scales.float().unsqueeze(-1)
        r_pad, c_pad = self.grid_shape[0] * bh, self.grid_shape[1] * bw
        padded = torch.zeros(r_pad, c_pad, device=out.device)
        grid = padded.view(r_pad // bh, bh, c_pad // bw, bw).permute(0, 2, 1, 3)
        idx = self.res_index.long().to(out.device)
        grid[idx[:, 0], idx[:, 1]] = vals.to(out.device)
        return padded[:n, :k].contiguous()

    def dequantize(self) -> torch.Tensor:
        """W_hat = Q(W) + M_S ⊙ Q(R), float32 [N, K]."""
        w = self.dequantize_base()
        if self.num_residual_blocks:
            w = w + self.dequantize_residual()
        return w

    def without_residual(self) -> "QuantizedWeight":
        """The dense base alone (no residual blocks): what the ``dense`` kernel runs of this weight."""
        return QuantizedWeight(out_features=self.out_features, in_features=self.in_features, bits=self.bits,
                               group_size=self.group_size, symmetric=self.symmetric, base_qweight=self.base_qweight,
                               base_scales=self.base_scales, base_zeros=self.base_zeros, block_shape=self.block_shape,
                               meta={**self.meta, "residual_dropped": self.num_residual_blocks},
                               **empty_residual(self.block_shape, self.base_scales.dtype, self.base_scales.device))

    def to(self, device) -> "QuantizedWeight":
        kw = {f: getattr(self, f) for f in self.__dataclass_fields__}
        for f, v in kw.items():
            if isinstance(v, torch.Tensor):
                kw[f] = v.to(device)
        return QuantizedWeight(**kw)

    # ------------------------------------------------------------------ persistence
    _TENSORS = ("base_qweight", "base_scales", "base_zeros", "res_index", "res_qweight", "res_scales")

    def describe(self) -> dict:
        return {
            "out_features": self.out_features, "in_features": self.in_features, "bits": self.bits,
            "group_size": self.group_size,
            "effective_group_size": effective_group_size(self.in_features, self.group_size),
            "symmetric": self.symmetric, "block_shape": list(self.block_shape),
            "residual_bits": RESIDUAL_BITS, "num_residual_blocks": self.num_residual_blocks,
            "residual_fraction": self.residual_fraction, "bits_per_weight": self.bits_per_weight(),
            "meta": self.meta,
        }

    def state_dict(self, prefix: str = "") -> dict[str, torch.Tensor]:
        return {prefix + name: getattr(self, name).contiguous().cpu() for name in self._TENSORS}

    @classmethod
    def from_state(cls, desc: dict, tensors: dict[str, torch.Tensor], prefix: str = "") -> "QuantizedWeight":
        return cls(
            out_features=desc["out_features"], in_features=desc["in_features"], bits=desc["bits"],
            group_size=desc["group_size"], symmetric=desc["symmetric"],
            block_shape=tuple(desc["block_shape"]), meta=desc.get("meta", {}),
            **{name: tensors[prefix + name] for name in cls._TENSORS},
        )


def concat_out_features(parts: list[QuantizedWeight]) -> QuantizedWeight:
    """Stack weights that share their input (q / k / v, gate / up) into one [sum N_i, K] weight, rows in order.

    Everything per row (codes, scales, zeros) is concatenated; residual block rows are shifted by each part's row
    offset in blocks, so every part but the last must have a multiple of the block height as out_features when any
    part keeps residual blocks (otherwise a block would straddle two parts). Dequantizing the result gives the
    parts' dequantized weights stacked, exactly."""
    if not parts:
        raise ValueError("concat_out_features needs at least one weight")
    first = parts[0]
    for i, p in enumerate(parts[1:], 1):
        for attr in ("in_features", "bits", "group_size", "symmetric", "block_shape"):
            if getattr(p, attr) != getattr(first, attr):
                raise ValueError(f"concat_out_features: part {i} has {attr}={getattr(p, attr)!r}, part 0 has "
                                 f"{getattr(first, attr)!r}")
        if p.base_scales.dtype != first.base_scales.dtype:
            raise ValueError(f"concat_out_features: part {i} stores scales as {p.base_scales.dtype}, part 0 as "
                             f"{first.base_scales.dtype}")
    bh = first.block_shape[0]
    with_res = [p for p in parts if p.num_residual_blocks]
    if with_res:
        for i, p in enumerate(parts[:-1]):
            if p.out_features % bh:
                raise ValueError(f"concat_out_features: part {i} has out_features={p.out_features}, not a multiple "
                                 f"of the residual block height {bh}; its blocks would straddle the next part")
        forms = {tuple(p.res_scales.shape[1:]) for p in with_res}
        if len(forms) > 1:
            raise ValueError(f"concat_out_features: residual scales per block row and per block mixed ({forms})")
    dev = first.base_scales.device
    offsets, idx, rq, rs = 0, [], [], []
    for p in parts:
        if p.num_residual_blocks:
            shift = torch.tensor([offsets // bh, 0], dtype=torch.int32, device=dev)
            idx.append(p.res_index.to(dev) + shift)
            rq.append(p.res_qweight.to(dev))
            rs.append(p.res_scales.to(dev))
        offsets += p.out_features
    res = ({"res_index": torch.cat(idx), "res_qweight": torch.cat(rq), "res_scales": torch.cat(rs)} if idx else
           empty_residual(first.block_shape, first.base_scales.dtype, dev))
    return QuantizedWeight(out_features=offsets, in_features=first.in_features, bits=first.bits,
                           group_size=first.group_size, symmetric=first.symmetric,
                           base_qweight=torch.cat([p.base_qweight.to(dev) for p in parts]),
                           base_scales=torch.cat([p.base_scales.to(dev) for p in parts]),
                           base_zeros=torch.cat([p.base_zeros.to(dev) for p in parts]),
                           block_shape=first.block_shape, meta={"concat_out_features": [p.out_features for p in parts]},
                           **res)


@dataclass
class BitSplitWeight:
    """ZipperQuant's layer: a B-bit weight split into a dense low-order part and sparse high-order bits.

      low            QuantizedWeight, symmetric ``low.bits``-bit (4): W_lo = s v_lo, what the GPU runs
      high_indptr    int32 [N + 1]   CSR over output rows: row n's nonzeros are [indptr[n], indptr[n + 1])
      high_indices   int32 [nnz]     their input columns k, ascending within a row
      high_codes     int8  [nnz]     v_hi (nonzero, |v_hi| <= 2^(B-L-1)), so that W_hi[n, k] = 2^L v_hi s[n, k // g]
    The high part shares the low part's scales. Dequantized: W_q = W_lo + W_hi = s v (v the B-bit code).
    """
    low: QuantizedWeight
    bits: int
    high_indptr: torch.Tensor
    high_indices: torch.Tensor
    high_codes: torch.Tensor
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        n, k = self.low.out_features, self.low.in_features
        if not self.low.symmetric:
            raise ValueError("BitSplitWeight needs a symmetric low part")
        if not self.low.bits < self.bits <= 8:
            raise ValueError(f"bits={self.bits} must exceed the low part's {self.low.bits} bits (and be <= 8)")
        if tuple(self.high_indptr.shape) != (n + 1,):
            raise ValueError(f"high_indptr shape {tuple(self.high_indptr.shape)} != {(n + 1,)} for N={n}")
        nnz = self.high_indices.numel()
        if self.high_codes.numel() != nnz or self.high_indices.dim() != 1 or self.high_codes.dim() != 1:
            raise ValueError(f"high_indices {tuple(self.high_indices.shape)} and high_codes "
                             f"{tuple(self.high_codes.shape)} must be 1-D of the same length")
        if self.high_indptr.dtype != torch.int32 or self.high_indices.dtype != torch.int32 \
                or self.high_codes.dtype != torch.int8:
            raise ValueError("high_indptr / high_indices must be int32 and high_codes int8, got "
                             f"{self.high_indptr.dtype} / {self.high_indices.dtype} / {self.high_codes.dtype}")
        if int(self.high_indptr[0]) != 0 or int(self.high_indptr[-1]) != nnz:
            raise ValueError(f"high_indptr must run from 0 to nnz={nnz}, got {int(self.high_indptr[0])}.."
                             f"{int(self.high_indptr[-1])}")
        if nnz and (int(self.high_indices.min()) < 0 or int(self.high_indices.max()) >= k):
            raise ValueError(f"high_indices out of range [0, K={k})")
        lim = self.high_code_limit
        if nnz and (int(self.high_codes.abs().max()) > lim or bool((self.high_codes == 0).any())):
            raise ValueError(f"high_codes must be nonzero in [-{lim}, {lim}] for bits={self.bits}, "
                             f"low bits={self.low.bits}")
        if bool((self.high_indptr[1:] < self.high_indptr[:-1]).any()):
            raise ValueError("high_indptr must be non-decreasing")

    @classmethod
    def from_dense_high(cls, low: QuantizedWeight, v_hi: torch.Tensor, bits: int, meta: dict | None = None):
        """Build from the dense high-order codes v_hi [N, K] (mostly zero)."""
        n = v_hi.shape[0]
        mask = v_hi != 0
        rows, cols = mask.nonzero(as_tuple=True)  # row-major: columns ascend within a row
        counts = mask.sum(dim=1)
        indptr = torch.zeros(n + 1, dtype=torch.int32, device=v_hi.device)
        indptr[1:] = torch.cumsum(counts, 0).to(torch.int32)
        return cls(low=low, bits=bits, high_indptr=indptr.cpu(), high_indices=cols.to(torch.int32).cpu(),
                   high_codes=v_hi[rows, cols].to(torch.int8).cpu(), meta=dict(meta or {}))

    @property
    def out_features(self) -> int:
        return self.low.out_features

    @property
    def in_features(self) -> int:
        return self.low.in_features

    @property
    def group_size(self) -> int:
        return self.low.group_size

    @property
    def high_code_limit(self) -> int:
        """|v_hi| <= 2^(B-L-1): a B-bit code split around a signed L-bit low field (6 / 4 bits: -2..2)."""
        return 2 ** (self.bits - self.low.bits - 1)

    @property
    def high_code_bits(self) -> int:
        """Bits to store one nonzero v_hi: B - L + 1 (its 2^(B-L) + 1 values, e.g. -2..2)."""
        return self.bits - self.low.bits + 1

    @property
    def high_nnz(self) -> int:
        return int(self.high_indices.numel())

    @property
    def high_density(self) -> float:
        return self.high_nnz / (self.out_features * self.in_features)

    def bits_per_weight(self, scale_bits: int = 16, index_bits: int = 32) -> float:
        """The low part's bits + per nonzero high code (``high_code_bits``) and its column index, + row pointers."""
        n, k = self.out_features, self.in_features
        high = self.high_nnz * (self.high_code_bits + index_bits) + (n + 1) * index_bits
        return self.low.bits_per_weight(scale_bits=scale_bits) + high / (n * k)

    def high_dense(self) -> torch.Tensor:
        """W_hi as a dense float32 [N, K] matrix (reference and tests)."""
        n, k = self.out_features, self.in_features
        dev = self.low.base_scales.device
        rows = torch.repeat_interleave(torch.arange(n, device=dev),
                                       (self.high_indptr[1:] - self.high_indptr[:-1]).long().to(dev))
        cols = self.high_indices.long().to(dev)
        gs = effective_group_size(k, self.group_size)
        vals = self.high_codes.float().to(dev) * (2 ** self.low.bits) * self.low.base_scales.float()[rows, cols // gs]
        out = torch.zeros(n, k, device=dev)
        out[rows, cols] = vals
        return out

    def dequantize(self) -> torch.Tensor:
        """W_q = W_lo + W_hi, float32 [N, K]."""
        return self.low.dequantize() + self.high_dense()

    def to(self, device) -> BitSplitWeight:
        return BitSplitWeight(low=self.low.to(device), bits=self.bits, high_indptr=self.high_indptr.to(device),
                              high_indices=self.high_indices.to(device), high_codes=self.high_codes.to(device),
                              meta=self.meta)

    _TENSORS = ("high_indptr", "high_indices", "high_codes")

    def describe(self) -> dict:
        return {"kind": "bitsplit", "bits": self.bits, "low": self.low.describe(), "high_nnz": self.high_nnz,
                "high_density": self.high_density, "bits_per_weight": self.bits_per_weight(), "meta": self.meta}

    def state_dict(self, prefix: str = "") -> dict[str, torch.Tensor]:
        out = self.low.state_dict(prefix=prefix + "low.")
        out.update({prefix + name: getattr(self, name).contiguous().cpu() for name in self._TENSORS})
        return out

    @classmethod
    def from_state(cls, desc: dict, tensors: dict[str, torch.Tensor], prefix: str = "") -> BitSplitWeight:
        low = QuantizedWeight.from_state(desc["low"], tensors, prefix=prefix + "low.")
        return cls(low=low, bits=desc["bits"], meta=desc.get("meta", {}),
                   **{name: tensors[prefix + name] for name in cls._TENSORS})


def save_quantized(weights: dict[str, QuantizedWeight | BitSplitWeight], path: str | Path) -> None:
    """Save named QuantizedWeights (or ZipperQuant's BitSplitWeights) as ``<path>.safetensors`` + ``<path>.json`` (description)."""
    from safetensors.torch import save_file

    path = Path(path)
    tensors: dict[str, torch.Tensor] = {}
    desc = {}
    for name, qw in weights.items():
        tensors.update(qw.state_dict(prefix=f"{name}."))
        desc[name] = qw.describe()
    save_file(tensors, str(path.with_suffix(".safetensors")))
    path.with_suffix(".json").write_text(json.dumps({"format": "mosaic-exp/quantized-weight/v1",
                                                     "layers": desc}, indent=1))


def load_quantized(path: str | Path, device="cpu") -> dict[str, QuantizedWeight | BitSplitWeight]:
    from safetensors.torch import load_file

    path = Path(path)
    desc = json.loads(path.with_suffix(".json").read_text())["layers"]
    tensors = load_file(str(path.with_suffix(".safetensors")), device=str(device))
    kinds = {"bitsplit": BitSplitWeight}
    return {name: kinds.get(d.get("kind"), QuantizedWeight).from_state(d, tensors, prefix=f"{name}.")
            for name, d in desc.items()}

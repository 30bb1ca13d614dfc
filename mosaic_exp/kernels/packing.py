"""Re-pack a :class:`mosaic_exp.formats.QuantizedWeight` into the ZipperEngine kernel layout.

Kernel layout (see native/zipper.cuh):
  * a *unit* is a 64 (n) x 64 (k) tile = 2048 bytes = 128 threads x 16 bytes, stored in the
    order the mma.sync m16n8k16 B fragments are consumed: byte offset
    ``((ws*32 + lane)*4 + word)*4 + b`` holds nibbles ``p = 2b`` (low) and ``2b+1`` (high) of
    word ``word`` (= k16 step), where warp-slot ``ws`` covers n in [16 ws, 16 ws + 16) and
    nibble p decodes to half2 ``p % 4`` (``p // 4`` = which half). See :func:`fragment_map`.
  * base codes ``qweight`` [NT, KT, 2048] uint8 (NT = Np/64, Np = N rounded up to 128;
    KT = Kp/64, Kp = K rounded up to 64); padded positions hold the group's zero point so they
    dequantize to exactly 0.
  * ``scales`` [G, Np] and ``zeros`` [G, Np] (= E + z, E = 1024 for fp16 / 128 for bf16, the
    magic exponent the kernel ORs the nibble into) in the activation dtype; zeros is None for
    symmetric weights (z = 8 is a kernel constant).
  * residual blocks (bh, bw multiples of 64) are split into 64x64 units ``res_qweight``
    [R, 2048] with per-row scales ``res_scales`` [R, 64]; ``res_lut`` [NT, KT] int32 holds the
    unit id or -1 (reference / tests), ``res_bits`` / ``res_base`` [NT, ceil(KT/32)] the same map as
    bit words plus first ids (what the zipper kernel reads), ``res_csr_ptr/kt/id`` list the units
    per n-tile (separate).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch

from mosaic_exp.formats import RESIDUAL_ZERO, QuantizedWeight
from mosaic_exp.quant.quantizer import effective_group_size, num_groups, unpack_int4

TILE = 64
N_ALIGN = 128  # widest CTA tile along n
UNIT_BYTES = 2048
MAGIC_E = {torch.float16: 1024.0, torch.bfloat16: 128.0}


class UnsupportedFormat(ValueError):
    """The QuantizedWeight cannot be packed for the native kernels (e.g. bits != 4)."""


# the largest rs / s the fp16 small-M kernel takes: it adds (r - 8) (rs / s) to (q - z) in the dtype, so
# 8 x 2048 + 15 stays far below fp16's 65504
_MAX_RES_RATIO = {torch.float16: 2048.0, torch.bfloat16: float("inf")}


def _check_residual_ratio(res_scales: torch.Tensor, s_p: torch.Tensor, unt: torch.Tensor, ukt: torch.Tensor,
                          gs: int, ng: int, dtype, n: int, k: int) -> None:
    """The small-M kernel folds a residual into the base's group sum as (q - z) + (r - 8) (rs / s) (native
    gemv_kernels.cu): every residual row needs a base scale s > 0 and rs / s in the dtype's range. Our
    quantizers never write s = 0; a foreign container can, and is rejected here, before any launch."""
    rows = unt.view(-1, 1) * TILE + torch.arange(TILE, device=unt.device).view(1, -1)  # [R, 64] (< n_pad)
    g = torch.clamp(ukt * TILE // gs, max=ng - 1).view(-1, 1).expand_as(rows)  # their scale group
    s = s_p.float()[g, rows]
    rs = res_scales.float()
    ratio = rs.abs() / torch.where(s > 0, s, torch.ones_like(s))
    bad = (rs != 0) & ((s <= 0) | ~torch.isfinite(ratio) | (ratio > _MAX_RES_RATIO[dtype]))
    if bool(bad.any()):
        u, j = (int(v) for v in torch.nonzero(bad)[0])
        raise UnsupportedFormat(
            f"residual row {int(rows[u, j])} at k-tile {int(ukt[u])} (n={n}, k={k}): residual scale "
            f"{float(rs[u, j]):.3g} over base scale {float(s[u, j]):.3g} is outside what the {dtype} kernels take "
            f"(base scale > 0, ratio <= {_MAX_RES_RATIO[dtype]:g})")


_FMAP: dict[str, torch.Tensor] = {}


def fragment_map() -> torch.Tensor:
    """Flat index ``n_local*64 + k_local`` for each nibble of a unit, in storage order
    [ws(4), lane(32), word(4), nibble(8)] -> int64 [4096]."""
    if "m" not in _FMAP:
        ws, lane, word, p = torch.meshgrid(torch.arange(4), torch.arange(32), torch.arange(4), torch.arange(8),
                                           indexing="ij")
        g, t = lane // 4, lane % 4
        j, h = p % 4, p // 4
        n = ws * 16 + (j // 2) * 8 + g
        k = word * 16 + (j % 2) * 8 + 2 * t + h
        _FMAP["m"] = (n * TILE + k).reshape(-1)
    return _FMAP["m"]


def shuffle_units(codes: torch.Tensor) -> torch.Tensor:
    """[U, 64, 64] uint8 codes (n, k) -> [U, 2048] uint8 in fragment order."""
    u = codes.shape[0]
    flat = codes.reshape(u, TILE * TILE)
    c = flat[:, fragment_map().to(codes.device)]
    return (c[:, 0::2] | (c[:, 1::2] << 4)).contiguous()


def unshuffle_units(packed: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`shuffle_units`: [U, 2048] -> [U, 64, 64]."""
    u = packed.shape[0]
    c = torch.stack((packed & 0xF, packed >> 4), dim=-1).reshape(u, TILE * TILE)
    out = torch.empty_like(c)
    out[:, fragment_map().to(packed.device)] = c
    return out.reshape(u, TILE, TILE)


@dataclass
class PackedW4:
    out_features: int
    in_features: int
    n_pad: int
    k_pad: int
    group_size: int       # effective group size along K
    gs_tiles: int         # group size in 64-wide k-tiles, 0 = per-channel
    dtype: torch.dtype
    qweight: torch.Tensor
    scales: torch.Tensor
    zeros: torch.Tensor | None
    block_shape: tuple[int, int]
    res_qweight: torch.Tensor
    res_scales: torch.Tensor
    res_lut: torch.Tensor
    res_csr_ptr: torch.Tensor
    res_csr_kt: torch.Tensor
    res_csr_id: torch.Tensor
    res_bits: torch.Tensor | None = None    # [NT, KW] int32, KW = ceil(KT/32): bit kt%32 of word kt//32
    res_base: torch.Tensor | None = None    # [NT, KW] int32: id of the first residual unit at/after (nt, 32w)
    res_window_max: int = 1                  # most residual units of one row in 8 consecutive k-tiles
    res_windows: tuple = ()                  # most residual units of one row in w consecutive k-tiles, w = 1..8

    @property
    def num_res_units(self) -> int:
        return int(self.res_qweight.shape[0])

    @property
    def has_residual(self) -> bool:
        return self.num_res_units > 0

    def tensors(self) -> dict[str, torch.Tensor]:
        return {f.name: getattr(self, f.name) for f in fields(self) if isinstance(getattr(self, f.name), torch.Tensor)}

    def to(self, device) -> PackedW4:
        kw = {f.name: getattr(self, f.name) for f in fields(self)}
        for k, v in kw.items():
            if isinstance(v, torch.Tensor):
                kw[k] = v.to(device)
        return PackedW4(**kw)

    def nbytes(self, residual: bool = True) -> int:
        b = self.qweight.numel() + self.scales.numel() * self.scales.element_size()
        if self.zeros is not None:
            b += self.zeros.numel() * self.zeros.element_size()
        if residual:
            b += self.res_qweight.numel() + self.res_scales.numel() * self.res_scales.element_size()
            # the zipper kernel's bookkeeping: residual bit words + first ids (the LUT is host-side)
            if self.res_bits is not None and self.res_base is not None:
                b += (self.res_bits.numel() + self.res_base.numel()) * 4
            else:
                b += self.res_lut.numel() * 4
        return b


def _round_up(x: int, m: int) -> int:
    return (x + m - 1) // m * m


def pack_quantized(qw: QuantizedWeight, dtype: torch.dtype = torch.float16, device=None) -> PackedW4:
    """QuantizedWeight -> PackedW4 (tensors on ``device``, default: where qw lives)."""
    if dtype not in MAGIC_E:
        raise UnsupportedFormat(f"activation dtype must be float16 or bfloat16, got {dtype}")
    if qw.bits != 4:
        raise UnsupportedFormat(f"native kernels need 4-bit base codes, got bits={qw.bits}")
    n, k = qw.out_features, qw.in_features
    dev = torch.device(device) if device is not None else qw.base_qweight.device
    gs = effective_group_size(k, qw.group_size)
    ng = num_groups(k, qw.group_size)
    if ng == 1:
        gs_tiles = 0
    elif gs % TILE == 0:
        gs_tiles = gs // TILE
    else:
        raise UnsupportedFormat(f"group size {qw.group_size} (n={n}, k={k}) is not supported by the native "
                                f"kernels: needs a multiple of {TILE} or per-channel")
    np_, kp = _round_up(n, N_ALIGN), _round_up(k, TILE)
    nt, kt = np_ // TILE, kp // TILE
    E = MAGIC_E[dtype]

    codes = qw.base_codes().to(dev)
    zeros = qw.base_zeros.to(dev).float()
    scales = qw.base_scales.to(dev).float()
    zint = torch.round(zeros).clamp(0, 15).to(torch.uint8)  # [N, G]
    padded = torch.full((np_, kp), 8, dtype=torch.uint8, device=dev)
    padded[:n, :k] = codes
    if kp > k:
        gidx = torch.clamp(torch.arange(k, kp, device=dev) // gs, max=ng - 1)
        padded[:n, k:] = zint[:, gidx]
    units = padded.view(nt, TILE, kt, TILE).permute(0, 2, 1, 3).reshape(nt * kt, TILE, TILE)
    qweight = shuffle_units(units).view(nt, kt, UNIT_BYTES)

    s_p = torch.zeros(ng, np_, dtype=torch.float32, device=dev)
    s_p[:, :n] = scales.t()
    symmetric_z8 = bool(torch.all(zeros == RESIDUAL_ZERO)) if zeros.numel() else True
    if symmetric_z8:
        z_p = None
    else:
        z_p = torch.full((ng, np_), E + 8, dtype=torch.float32, device=dev)
        z_p[:, :n] = E + zeros.t()
        z_p = z_p.to(dtype).contiguous()
    s_p = s_p.to(dtype).contiguous()

    bh, bw = qw.block_shape
    nb = qw.num_residual_blocks
    if nb:
        if bh % TILE or bw % TILE:
            raise UnsupportedFormat(f"residual block shape {qw.block_shape} (n={n}, k={k}) must be a multiple "
                                    f"of {TILE}x{TILE} for the native kernels")
        sh, sw = bh // TILE, bw // TILE
        rc = unpack_int4(qw.res_qweight.to(dev), bw)  # [B, bh, bw]
        rsc = qw.res_scales.to(dev).float()
        if rsc.shape[1] == 1:
            rsc = rsc.expand(nb, bh)
        idx = qw.res_index.to(dev).long()
        ut = rc.view(nb, sh, TILE, sw, TILE).permute(0, 1, 3, 2, 4).reshape(nb * sh * sw, TILE, TILE)
        us = rsc.view(nb, sh, 1, TILE).expand(nb, sh, sw, TILE).reshape(nb * sh * sw, TILE)
        si = torch.arange(sh, device=dev).view(1, sh, 1).expand(nb, sh, sw).reshape(-1)
        sj = torch.arange(sw, device=dev).view(1, 1, sw).expand(nb, sh, sw).reshape(-1)
        unt = idx[:, 0].repeat_interleave(sh * sw) * sh + si
        ukt = idx[:, 1].repeat_interleave(sh * sw) * sw + sj
        keep = (unt * TILE < n) & (ukt * TILE < k)
        ut, us, unt, ukt = ut[keep].clone(), us[keep].clone(), unt[keep], ukt[keep]
        # positions outside the matrix dequantize to 0 (code 8, scale 0)
        rows = unt.view(-1, 1) * TILE + torch.arange(TILE, device=dev).view(1, -1)  # [R, 64]
        cols = ukt.view(-1, 1) * TILE + torch.arange(TILE, device=dev).view(1, -1)
        ut[(rows >= n).unsqueeze(2).expand_as(ut)] = RESIDUAL_ZERO
        ut[(cols >= k).unsqueeze(1).expand_as(ut)] = RESIDUAL_ZERO
        us[rows >= n] = 0
        lin = unt * kt + ukt
        if lin.numel() != torch.unique(lin).numel():
            raise UnsupportedFormat(f"duplicate residual blocks in res_index (n={n}, k={k})")
        order = torch.argsort(lin)
        ut, us, unt, ukt, lin = ut[order], us[order], unt[order], ukt[order], lin[order]
        r = int(ut.shape[0])
        res_qweight = shuffle_units(ut)
        res_scales = us.to(dtype).contiguous()
        _check_residual_ratio(res_scales, s_p, unt, ukt, gs, ng, dtype, n, k)
        lut = torch.full((nt * kt,), -1, dtype=torch.int32, device=dev)
        lut[lin] = torch.arange(r, dtype=torch.int32, device=dev)
        counts = torch.bincount(unt, minlength=nt)
        csr_ptr = torch.zeros(nt + 1, dtype=torch.int32, device=dev)
        csr_ptr[1:] = torch.cumsum(counts, 0).to(torch.int32)
        csr_kt = ukt.to(torch.int32).contiguous()
        csr_id = torch.arange(r, dtype=torch.int32, device=dev)
    else:
        res_qweight = torch.zeros(0, UNIT_BYTES, dtype=torch.uint8, device=dev)
        res_scales = torch.zeros(0, TILE, dtype=dtype, device=dev)
        lut = torch.full((nt * kt,), -1, dtype=torch.int32, device=dev)
        csr_ptr = torch.zeros(nt + 1, dtype=torch.int32, device=dev)
        csr_kt = torch.zeros(0, dtype=torch.int32, device=dev)
        csr_id = torch.zeros(0, dtype=torch.int32, device=dev)
    has = (lut.view(nt, kt) >= 0).to(torch.int32)
    res_bits, res_base = residual_bit_words(has)
    incl = torch.zeros(nt, kt + 1, dtype=torch.int32, device=dev)
    incl[:, 1:] = torch.cumsum(has, 1)
    windows = []
    for w in range(1, 9):
        wc = min(w, kt)
        windows.append(max(1, int((incl[:, wc:] - incl[:, :-wc]).max()) if nt else 0))
    return PackedW4(
        res_bits=res_bits, res_base=res_base, res_window_max=windows[7], res_windows=tuple(windows),
        out_features=n, in_features=k, n_pad=np_, k_pad=kp, group_size=gs, gs_tiles=gs_tiles, dtype=dtype,
        qweight=qweight.contiguous(), scales=s_p, zeros=z_p, block_shape=(int(bh), int(bw)),
        res_qweight=res_qweight, res_scales=res_scales, res_lut=lut.view(nt, kt).contiguous(),
        res_csr_ptr=csr_ptr, res_csr_kt=csr_kt, res_csr_id=csr_id,
    )


def residual_bit_words(has: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[NT, KT] 0/1 residual map -> (bits, base), both [NT, KW] int32 with KW = ceil(KT/32).

    ``bits[nt, w]`` has bit i set where a residual unit exists at k-tile 32w + i (as int32 two's
    complement); ``base[nt, w]`` is the id of the first residual unit at or after (nt, 32w) in
    (nt, kt) order, which is the order of ``res_qweight`` (ids of one row are consecutive)."""
    nt, kt = has.shape
    kw = max(1, (kt + 31) // 32)
    h = torch.zeros(nt, kw * 32, dtype=torch.int64, device=has.device)
    h[:, :kt] = has.to(torch.int64)
    words = (h.view(nt, kw, 32) << torch.arange(32, device=has.device, dtype=torch.int64)).sum(-1)
    bits = torch.where(words >= 2**31, words - 2**32, words).to(torch.int32).contiguous()
    flat = h.reshape(-1)
    excl = torch.cumsum(flat, 0) - flat  # ids in (nt, kt) order
    base = excl.view(nt, kw, 32)[:, :, 0].to(torch.int32).contiguous()
    return bits, base


def dequantize_packed(p: PackedW4, residual: bool = True, via: str = "lut") -> torch.Tensor:
    """Emulate the kernel's weight path from the packed layout (float32 [N, K]):
    ``(q - z) * s`` per unit, plus ``(q_r - 8) * s_r`` for units found via the LUT (``via='lut'``,
    zipper) or the CSR lists (``via='csr'``, separate). Used by the packing round-trip tests."""
    nt, kt = p.n_pad // TILE, p.k_pad // TILE
    codes = unshuffle_units(p.qweight.reshape(nt * kt, UNIT_BYTES)).view(nt, kt, TILE, TILE)
    codes = codes.permute(0, 2, 1, 3).reshape(p.n_pad, p.k_pad).float()
    kk = torch.arange(p.k_pad, device=codes.device)
    gidx = kk // (p.gs_tiles * TILE) if p.gs_tiles else torch.zeros_like(kk)
    s = p.scales.float()[gidx].t()  # [Np, Kp]
    E = MAGIC_E[p.dtype]
    z = (p.zeros.float()[gidx].t() - E) if p.zeros is not None else torch.full_like(s, 8.0)
    w = (codes - z) * s
    if residual and p.has_residual:
        rcodes = unshuffle_units(p.res_qweight).float() - RESIDUAL_ZERO  # [R, 64, 64]
        rvals = rcodes * p.res_scales.float().unsqueeze(-1)
        if via == "lut":
            lut = p.res_lut.reshape(-1)
            pos = torch.nonzero(lut >= 0).squeeze(1)
            ids = lut[pos].long()
            tn, tk = pos // kt, pos % kt
        elif via == "csr":
            ptr = p.res_csr_ptr.long()
            tn = torch.repeat_interleave(torch.arange(nt, device=ptr.device), ptr[1:] - ptr[:-1])
            tk = p.res_csr_kt.long()
            ids = p.res_csr_id.long()
        else:
            raise ValueError(f"via must be 'lut' or 'csr', got {via!r}")
        grid = w.view(nt, TILE, kt, TILE).permute(0, 2, 1, 3)
        grid[tn, tk] += rvals[ids]
    return w[: p.out_features, : p.in_features].contiguous()


def dequantize_like_kernel(qw: QuantizedWeight, dtype: torch.dtype) -> torch.Tensor:
    """qw.dequantize() with scales rounded to the kernel's activation dtype (what the kernel
    sees), float32 [N, K]: the weights the tests' float64 reference multiplies with."""
    kw = {f: getattr(qw, f) for f in qw.__dataclass_fields__}
    kw["base_scales"] = qw.base_scales.to(dtype).float()
    if qw.num_residual_blocks:
        kw["res_scales"] = qw.res_scales.to(dtype).float()
    return QuantizedWeight(**kw).dequantize()


__all__ = [
    "TILE",
    "UNIT_BYTES",
    "PackedW4",
    "UnsupportedFormat",
    "dequantize_like_kernel",
    "dequantize_packed",
    "fragment_map",
    "pack_quantized",
    "residual_bit_words",
    "shuffle_units",
    "unshuffle_units",
]

"""Block partition of a [N, K] matrix into blocks of shape (bh, bw).

Block (r, c) covers rows [r*bh, min((r+1)*bh, N)) and cols [c*bw, min((c+1)*bw, K)) (the same
convention as ``QuantizedWeight``). When N or K is not a multiple of the block shape, the edge
blocks are partial: ``to_blocks`` zero-pads the matrix to [nbr*bh, nbc*bw] and ``from_blocks``
crops back. A block shape entry of -1 (or larger than the dimension) means "the whole dimension",
so (-1, 1) gives column (input-channel) blocks.
"""

from __future__ import annotations

import math

import torch


def resolve_block_shape(block_shape, shape: tuple[int, int]) -> tuple[int, int]:
    """int b -> (b, b); -1 -> full dimension; validated positive ints."""
    if isinstance(block_shape, int):
        block_shape = (block_shape, block_shape)
    bh, bw = (int(b) for b in block_shape)
    n, k = shape
    bh = n if bh == -1 else bh
    bw = k if bw == -1 else bw
    if bh <= 0 or bw <= 0:
        raise ValueError(f"block_shape must be positive or -1, got {block_shape}")
    return bh, bw


def grid_shape(shape: tuple[int, int], block_shape: tuple[int, int]) -> tuple[int, int]:
    """(nbr, nbc) = (ceil(N/bh), ceil(K/bw))."""
    bh, bw = resolve_block_shape(block_shape, shape)
    return math.ceil(shape[0] / bh), math.ceil(shape[1] / bw)


def pad_to_blocks(M: torch.Tensor, block_shape) -> torch.Tensor:
    """Zero-pad M [N, K] to [nbr*bh, nbc*bw] (a view-free copy only when padding is needed)."""
    n, k = M.shape
    bh, bw = resolve_block_shape(block_shape, (n, k))
    nbr, nbc = math.ceil(n / bh), math.ceil(k / bw)
    if (nbr * bh, nbc * bw) == (n, k):
        return M
    return torch.nn.functional.pad(M, (0, nbc * bw - k, 0, nbr * bh - n))


def to_blocks(M: torch.Tensor, block_shape) -> torch.Tensor:
    """M [N, K] -> [nbr, nbc, bh, bw] (zero-padded edges)."""
    n, k = M.shape
    bh, bw = resolve_block_shape(block_shape, (n, k))
    P = pad_to_blocks(M, (bh, bw))
    nbr, nbc = P.shape[0] // bh, P.shape[1] // bw
    return P.reshape(nbr, bh, nbc, bw).permute(0, 2, 1, 3)


def from_blocks(B: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """[nbr, nbc, bh, bw] -> [N, K] (crops the padding)."""
    nbr, nbc, bh, bw = B.shape
    return B.permute(0, 2, 1, 3).reshape(nbr * bh, nbc * bw)[: shape[0], : shape[1]]


def block_sum(M: torch.Tensor, block_shape) -> torch.Tensor:
    """Sum of the entries of M [N, K] in each block -> [nbr, nbc]."""
    return to_blocks(M, block_shape).sum(dim=(-2, -1))


def valid_mask(shape: tuple[int, int], block_shape, device=None) -> torch.Tensor:
    """bool [nbr, nbc, bh, bw]: True where the block entry is a real (not padded) element."""
    return to_blocks(torch.ones(shape, dtype=torch.bool, device=device), block_shape)


def block_numel(shape: tuple[int, int], block_shape, device=None) -> torch.Tensor:
    """int64 [nbr, nbc]: number of real elements in each block (edge blocks are smaller)."""
    return valid_mask(shape, block_shape, device).sum(dim=(-2, -1))


def expand_mask(mask: torch.Tensor, shape: tuple[int, int], block_shape) -> torch.Tensor:
    """Block mask [nbr, nbc] -> element mask [N, K] (M_S in the paper)."""
    bh, bw = resolve_block_shape(block_shape, shape)
    m = mask.bool().repeat_interleave(bh, dim=0).repeat_interleave(bw, dim=1)
    return m[: shape[0], : shape[1]]

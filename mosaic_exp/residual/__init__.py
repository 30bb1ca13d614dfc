"""Residual blocks of MosaicQuant: partition, 4-bit residual quantization, scores, selection."""

from mosaic_exp.residual.blocks import (  # noqa: F401
    block_numel,
    block_sum,
    expand_mask,
    from_blocks,
    grid_shape,
    pad_to_blocks,
    resolve_block_shape,
    to_blocks,
    valid_mask,
)
from mosaic_exp.residual.build import build_quantized_weight  # noqa: F401
from mosaic_exp.residual.quantize import quantize_residual  # noqa: F401
from mosaic_exp.residual.scores import SELECTORS, get_selector, score_blocks  # noqa: F401
from mosaic_exp.residual.select import allocate_counts, budget_count, topk_global, topk_per_layer  # noqa: F401

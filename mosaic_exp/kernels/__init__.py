"""ZipperEngine W4A16 kernels: packing, custom ops and QuantLinear.

Importing this package loads no native code; the compiled module (native/build) is loaded on
the first native launch. ``mosaic_exp.kernels.ops`` registers the torch.library ops
(mosaic::dense_gemm / zipper_gemm / separate_gemm); QuantLinear imports it when needed.
"""

from mosaic_exp.kernels.native import NativeUnavailable, native_status
from mosaic_exp.kernels.packing import PackedW4, UnsupportedFormat, dequantize_packed, pack_quantized
from mosaic_exp.kernels.quant_linear import (
    VARIANTS,
    QuantLinear,
    VariantUnavailable,
    available_variants,
    check_variant,
)
from mosaic_exp.kernels.reference import reference_gemm

__all__ = [
    "VARIANTS",
    "NativeUnavailable",
    "PackedW4",
    "QuantLinear",
    "UnsupportedFormat",
    "VariantUnavailable",
    "available_variants",
    "check_variant",
    "dequantize_packed",
    "native_status",
    "pack_quantized",
    "reference_gemm",
]

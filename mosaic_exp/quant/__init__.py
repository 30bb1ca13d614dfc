"""Quantization methods. Submodules are imported lazily (``mosaic_exp.formats`` imports
``mosaic_exp.quant.quantizer``, and ``mosaic`` imports ``formats``: eager imports would cycle)."""

import importlib

_EXPORTS = {
    "rtn_quantize": "rtn", "rtn_dequantize": "rtn",
    "GPTQ": "gptq", "GPTQResult": "gptq", "damped_inverse_cholesky": "gptq",
    "smooth_scales": "smooth", "apply_smoothing": "smooth", "fold_into_linear": "smooth",
    "scale_input_columns": "smooth", "expand_kv_scales": "smooth", "reduce_kv_absmax": "smooth",
    "fake_quantize_activation": "act", "act_quant_pre_hook": "act", "register_act_quant": "act",
    "ActQuantizer": "act",
    "mosaic_quantize": "mosaic", "mosaic_candidates": "mosaic", "finalize": "mosaic",
    "Candidates": "mosaic", "candidates_info": "mosaic",
}

__all__ = list(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""embtune_kernels: fused ops for training embedding models on packed (padding-free) batches.

Each op has a plain-PyTorch reference (runs anywhere; the test oracle) and a Triton version (CUDA);
:mod:`embtune_kernels.dispatch` picks one per call from the tensors' device and ``EMBTUNE_KERNELS``
(auto | triton | torch). Importing this package never imports triton or bitsandbytes.

Public API:

* :func:`lora_linear`, :func:`lora_linear_nf4` (+ :class:`NF4Weight`, :func:`dequantize_nf4`),
  :func:`lora_linear_exact` (PEFT's rounding; one shared autograd Function for all three)
* :func:`layer_norm` (residual add + LayerNorm, returns the sum too)
* :func:`pool` (mean / cls / last over ``cu_seqlens``, optional L2 normalise), :func:`pool_spans`
  (the same over row runs with gaps, e.g. a padded batch)
* :func:`info_nce` (online-softmax InfoNCE, optional symmetric)
* :func:`use_backend`, :func:`has_triton`
"""

from .dispatch import has_triton, use_backend
from .infonce import info_nce
from .layer_norm import layer_norm
from .lora_linear import NF4Weight, dequantize_nf4, lora_linear, lora_linear_exact, lora_linear_nf4
from .pooling import pool, pool_spans

__all__ = [
    "NF4Weight",
    "dequantize_nf4",
    "has_triton",
    "info_nce",
    "layer_norm",
    "lora_linear",
    "lora_linear_exact",
    "lora_linear_nf4",
    "pool",
    "pool_spans",
    "use_backend",
]

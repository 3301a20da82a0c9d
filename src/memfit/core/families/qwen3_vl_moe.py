"""Qwen3-VL-MoE (Qwen3VLMoeForConditionalGeneration: Qwen3-VL-30B-A3B, -235B-A22B): Qwen3-VL's tower with a
Qwen3-MoE decoder (fused routed experts of moe_intermediate_size, router `gate` (E, h), dense layers by
mlp_only_layers / decoder_sparse_step). The mapping lives in qwen3_vl.py beside the dense family's.

Source: transformers 5.17.0 models/qwen3_vl_moe/configuration_qwen3_vl_moe.py, modeling_qwen3_vl_moe.py.
"""

from __future__ import annotations

from memfit.core.families.qwen3_vl import moe_spec_from_config as spec_from_config

__all__ = ["spec_from_config"]

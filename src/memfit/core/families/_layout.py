"""Module names and fusions of one family's decoder layer, as transformers 5.17 builds them.

`params.layer_linears` names each matrix after the real HF module (GPT-2's Conv1D `c_attn`, Falcon's
`query_key_value`, Phi-3's fused `gate_up_proj`), so LoRA target names and bitsandbytes module skipping line
up with what peft and transformers see. Source: transformers/models/<family>/modeling_<family>.py, 5.17.0.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True, kw_only=True)
class Layout:
    """HF module names of a decoder layer's matrices; a fused name, when set, replaces its parts."""

    q: str = "q_proj"
    k: str = "k_proj"
    v: str = "v_proj"
    o: str = "o_proj"
    qkv: str = "qkv_proj"            # used when AttentionSpec.fused_qkv
    gate: str = "gate_proj"
    up: str = "up_proj"
    down: str = "down_proj"
    gate_up: str | None = None       # one fused gate+up Linear (Phi-3)
    router: str = "gate"             # MoE router: a raw (num_experts, hidden) Parameter in transformers 5
    experts_gate_up: str = "gate_up_proj"  # fused 3-D expert Parameters (num_experts, 2·I, hidden)
    experts_down: str = "down_proj"


LLAMA = Layout()

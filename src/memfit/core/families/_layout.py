"""Module names and fusions of one family's decoder layer, as transformers 5.17 builds them.

`params.layer_linears` names each matrix after the real HF module (GPT-2's Conv1D `c_attn`, Falcon's
`query_key_value`, Phi-3's fused `gate_up_proj`), so LoRA target names and bitsandbytes module skipping line
up with what peft and transformers see. Source: transformers/models/<family>/modeling_<family>.py, 5.17.0.
"""

from __future__ import annotations

from memfit.core.spec import ModuleNames

Layout = ModuleNames


LLAMA = Layout()
GPT2 = Layout(qkv="c_attn", o="c_proj", up="c_fc", down="c_proj")
"""GPT-2 (Conv1D) and GPT-BigCode (nn.Linear): c_attn, c_proj; MLP c_fc, c_proj."""
NEOX = Layout(qkv="query_key_value", o="dense", up="dense_h_to_4h", down="dense_4h_to_h")
"""GPT-NeoX, BLOOM and Falcon."""
GPTJ = Layout(o="out_proj", up="fc_in", down="fc_out")
OPT = Layout(o="out_proj", up="fc1", down="fc2")
PHI = Layout(o="dense", up="fc1", down="fc2", q_norm="q_layernorm", k_norm="k_layernorm")
PHI3 = Layout(qkv="qkv_proj", gate_up="gate_up_proj")
STARCODER2 = Layout(up="c_fc", down="c_proj")
GPT_OSS = Layout(router="router")
GRANITE_HYBRID = Layout(gate_up="input_linear", down="output_linear", router="router")
"""Granite-4.0-H: shared_mlp input_linear (gate and up fused) and output_linear; MoE `router`."""
NEMOTRON_H = Layout()
"""Nemotron-H: q/k/v/o_proj, up_proj/down_proj (non-gated), MoE router `gate`."""

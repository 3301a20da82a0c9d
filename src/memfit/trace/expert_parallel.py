"""Expert parallelism of the traced model as torchtitan runs it: each of `ep` ranks holds num_experts / ep
routed experts, and the tokens routed to them travel by all-to-all.

What one rank does per MoE layer (torchtitan distributed/expert_parallel.py `ExpertParallel`,
models/moe.py `MoE.forward`), around transformers' own experts forward:

1. the router runs on the rank's own tokens (the gate is replicated, FSDP-sharded like any dense weight);
2. the (token, expert) pairs are sorted by expert, so by owning rank, and the token rows gathered into a
   send buffer of tokens × top_k rows;
3. `all_to_all_single_autograd` sends each rank's share and receives the rows routed to this rank's experts;
4. transformers' experts forward (grouped_mm over the local experts' fused 3-D weights) runs on the
   received rows, each row with one local expert;
5. a second all-to-all returns the outputs, which are scaled by the routing weights, put back in token order
   and summed over top_k.

Routing is data dependent and fake tensors carry no values, so the split sizes are an assumption:
**balanced routing**, every rank sends tokens × top_k / ep rows to each rank and so receives tokens × top_k
rows for its experts, as many as one GPU computes without expert parallelism (the analytic engine assumes
the same: core/per_rank.py `ep_dispatch_bytes`).

transformers 5.17 has an expert-parallel plan of its own (`base_model_ep_plan`: "grouped_gemm" shards the
expert weights on dim 0, "ep_router" masks non-local experts, "moe_tp_experts" all-reduces the outputs),
but it runs on the tensor-parallel mesh: every expert-parallel rank sees the same tokens and computes all
tokens × top_k rows with the others masked. memfit's training `ep` is carved out of the data-parallel
ranks (torchtitan, DeepSpeed-MoE), whose ranks hold different tokens, so the trace follows torchtitan's
all-to-all; the per-rank expert rows are the same in both under balanced routing.

The experts are shrunk on the meta device before peft wraps them (`shrink`), so LoRA on fused experts
(peft's ParamWrapper) gets num_experts / ep experts' adapters, as a rank holding only its experts would.
"""

from __future__ import annotations

from typing import Any

import torch

EP_ATTR = "_memfit_ep"
"""Set on an experts module `shrink` resized: (ep, global number of experts)."""


def experts_modules(model: Any) -> list[torch.nn.Module]:
    """The routed-experts modules: those holding fused 3-D expert weights and a num_experts count
    (transformers 5.17 Qwen3MoeExperts, DeepseekV2Experts, MixtralExperts)."""
    found = []
    for module in model.modules():
        params = [p for p in module._parameters.values() if p is not None]
        if hasattr(module, "num_experts") and params and all(p.dim() == 3 for p in params):
            found.append(module)
    return found


def shrink(model: Any, ep: int) -> int:
    """Keep num_experts / ep experts in every routed-experts module (on the meta device): dim 0 of each
    fused weight and `num_experts`. Returns the number of modules shrunk."""
    modules: list[Any] = experts_modules(model)
    for module in modules:
        total = int(module.num_experts)
        local = total // ep
        for name, param in list(module._parameters.items()):
            if param is None:
                continue
            shape = (local, *param.shape[1:])
            module._parameters[name] = torch.nn.Parameter(
                torch.empty(shape, dtype=param.dtype, device=param.device), requires_grad=param.requires_grad)
        module.num_experts = local
        setattr(module, EP_ATTR, (ep, total))
    return len(modules)


def install(model: Any, ep_group: Any) -> None:
    """Route every shrunk experts module's forward through the all-to-all dispatch over `ep_group`."""
    for module in model.modules():
        if hasattr(module, EP_ATTR):
            module.forward = _dispatching(module, ep_group)


def balanced_splits(rows: int, ep: int) -> list[int]:
    """Rows sent to (and received from) each of `ep` ranks under balanced routing: rows / ep each, the
    first rows % ep ranks one more."""
    base, extra = divmod(rows, ep)
    return [base + (1 if rank < extra else 0) for rank in range(ep)]


def _dispatching(module: Any, ep_group: Any) -> Any:
    from torch.distributed._functional_collectives import all_to_all_single_autograd

    ep, _ = getattr(module, EP_ATTR)
    local_forward = type(module).forward      # transformers' experts forward (its experts implementation)

    def forward(hidden_states: torch.Tensor, top_k_index: torch.Tensor,
                top_k_weights: torch.Tensor) -> torch.Tensor:
        num_tokens, hidden = hidden_states.shape
        top_k = top_k_index.shape[-1]
        rows = num_tokens * top_k
        splits = balanced_splits(rows, ep)
        # (rows,) expert ids sorted: the pairs grouped by the rank owning their expert
        expert_ids, perm = torch.sort(top_k_index.reshape(-1))
        send = hidden_states[perm // top_k]                                  # (rows, hidden)
        received = all_to_all_single_autograd(send, splits, splits, ep_group)
        local_ids = torch.remainder(expert_ids, module.num_experts).reshape(rows, 1)
        ones = torch.ones((rows, 1), dtype=top_k_weights.dtype, device=hidden_states.device)
        computed = local_forward(module, received, local_ids, ones)           # (rows, hidden)
        returned = all_to_all_single_autograd(computed, splits, splits, ep_group)
        weighted = returned * top_k_weights.reshape(-1)[perm].unsqueeze(-1)
        order = torch.empty_like(perm)
        order[perm] = torch.arange(rows, device=perm.device)
        return weighted[order].view(num_tokens, top_k, hidden).sum(dim=1).to(hidden_states.dtype)

    return forward

"""Optimizer states and step temporaries on small tensor lists, with the arithmetic in comments."""

from __future__ import annotations

import pytest

from memfit.core.choices import Optimizer
from memfit.core.families import spec_from_config
from memfit.core.optimizers import ParamTensor, optimizer_memory, trainable_tensors
from memfit.core.params import count_params
from memfit.core.spec import ModelSource
from memfit.core.workload import Training

# a (1000 × 512) bf16 matrix and two 512-wide bf16 vectors
MATRIX = ParamTensor(name="w", rows=1000, cols=512, element_bytes=2)
VECTORS = ParamTensor(name="norm", rows=512, cols=1, element_bytes=2, count=2)
TENSORS = (MATRIX, VECTORS)
PARAM_BYTES = 1000 * 512 * 2 + 2 * 512 * 2   # 1,024,000 + 2,048 = 1,026,048


@pytest.mark.parametrize(("opt", "states", "step"), [
    (Optimizer.ADAMW, 2 * PARAM_BYTES, PARAM_BYTES),                 # foreach: one full copy
    (Optimizer.ADAM, 2 * PARAM_BYTES, PARAM_BYTES),
    (Optimizer.ADAMW_FUSED, 2 * PARAM_BYTES + 3 * 512, 0),           # 3 device step scalars × 512 B
    (Optimizer.ADAMW_LOOP, 2 * PARAM_BYTES, 2 * 1_024_000),          # sqrt and div of the largest
    (Optimizer.SGD, 0, 0),
    (Optimizer.SGD_MOMENTUM, PARAM_BYTES, 0),
    (Optimizer.LION, PARAM_BYTES, 2 * 1_024_000),
])
def test_torch_style_optimizers(opt: Optimizer, states: int, step: int) -> None:
    """States and temporaries of the torch-style optimizers match the table in optimizers.py."""
    got = optimizer_memory(opt, TENSORS)
    assert (got.states.nbytes, got.step_bytes, got.paged_bytes) == (states, step, 0)


def test_adafactor_factors_matrices() -> None:
    """Adafactor keeps fp32 rows + cols for a matrix and a full fp32 vector for 1-D tensors."""
    # (1000 + 512) × 4 B + 2 × 512 × 4 B = 6,048 + 4,096 = 10,144
    # step: 512,000 elements × (2 update buffers × 4 B + fp32 param and grad copies 8 B) = 8,192,000
    got = optimizer_memory(Optimizer.ADAFACTOR, TENSORS)
    assert (got.states.nbytes, got.step_bytes) == (10_144, 8_192_000)


def test_adafactor_sizes_temporaries_by_the_whole_fused_expert_stack() -> None:
    """A fused (experts, rows, cols) Parameter is one tensor: its step buffers span every expert."""
    # 2 layers of (64, 96, 128) bf16 experts: states 2 × 64 × (96 + 128) × 4 B = 114,688
    # step: one tensor of 64 · 96 · 128 = 786,432 elements × 16 B = 12,582,912 (not 12,288 × 16 B)
    stacked = ParamTensor(name="gate_up_proj", rows=96, cols=128, element_bytes=2, count=2, stack=64)
    got = optimizer_memory(Optimizer.ADAFACTOR, (stacked,))
    assert (got.states.nbytes, got.step_bytes) == (114_688, 12_582_912)


def test_adamw_8bit_block_wise_states() -> None:
    """bnb AdamW8bit: 2 uint8 per element + 2 fp32 absmax per 256; tensors under 4096 elements: fp32."""
    # matrix: 2 × 512,000 + 2 × 4 × 2000 blocks = 1,024,000 + 16,000
    # vectors (512 < 4096 elements, fp32): 2 tensors × 2 states × 512 × 4 B = 8,192
    got = optimizer_memory(Optimizer.ADAMW_8BIT, TENSORS)
    assert got.states.nbytes == 1_024_000 + 16_000 + 8_192
    assert got.step_bytes == 0


def test_paged_states_leave_the_allocator() -> None:
    """Paged AdamW: states of tensors ≥ 1e5 elements go to managed memory; absmax and small ones stay."""
    # 8-bit: matrix uint8 states 1,024,000 paged; absmax 16,000 and vectors 8,192 on device
    got = optimizer_memory(Optimizer.PAGED_ADAMW_8BIT, TENSORS)
    assert (got.states.nbytes, got.paged_bytes) == (24_192, 1_024_000)
    # 32-bit: fp32 states 2 × 4 × 512,000 = 4,096,000 paged; vectors 2 × 4 × 1024 = 8,192 on device
    got32 = optimizer_memory(Optimizer.PAGED_ADAMW_32BIT, TENSORS)
    assert (got32.states.nbytes, got32.paged_bytes) == (8_192, 4_096_000)


TINY_OPT = {"model_type": "opt", "hidden_size": 64, "ffn_dim": 128, "num_hidden_layers": 2,
            "num_attention_heads": 4, "vocab_size": 100, "word_embed_proj_dim": 32,
            "max_position_embeddings": 64, "do_layer_norm_before": False}


def test_full_training_tensors_use_the_narrow_embedding_width() -> None:
    """OPT-350m style: the token embedding is (vocab, word_embed_proj_dim), every parameter counted once."""
    # embeddings 100·32 = 3,200; positions (64 + 2)·64 = 4,224; per layer 4·(64·64 + 64) + (128·64 + 128)
    # + (64·128 + 64) = 33,216, × 2 = 66,432; 4 LayerNorms × 128 = 512; project_in/out 2·2,048 = 4,096
    # total 78,464 = count_params
    spec = spec_from_config(TINY_OPT, name="tiny-opt", source=ModelSource(kind="config", ref="t"))
    tensors = trainable_tensors(spec, Training(seq_len=16), frozenset())
    shapes = {t.name: (t.rows, t.cols) for t in tensors}
    assert shapes["embeddings"] == (100, 32)
    assert shapes["position_embeddings"] == (66, 64)
    assert sum(t.count * t.numel for t in tensors) == 78_464 == count_params(spec).num_params

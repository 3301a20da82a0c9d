"""What each accelerator architecture can run, and the BLAS workspace its torch build takes per handle.

One row per architecture (`ARCHS`), not per GPU: a catalog GPU names its architecture and compute
capability, and the catalog loader fills the typed capability fields of `result.Gpu` from its row:
- `bf16`: bfloat16 tensor math (NVIDIA sm80+, CDNA2+, Gaudi, Apple with macOS 14+);
- `fp8`: native FP8 tensor cores (NVIDIA sm89+, CDNA3, Gaudi 2+);
- `fp4`: native FP4 tensor cores (NVIDIA Blackwell, sm100 and sm120);
- `flash_attention`: torch SDPA's flash backend (CUDA sm80-sm121, check_flash_attention_hardware_support;
  ROCm through AOTriton on gfx90a/gfx942; Gaudi: Habana's FusedSDPA, also no materialised scores);
- `efficient_attention` / `efficient_bf16` (row only): SDPA's memory-efficient backend (CUDA sm50+; bf16
  only from sm80, `less_than_sm80_mem_efficient_dtypes` = half, float);
- `blas_workspace_bytes`: what the caching allocator gives each cuBLAS handle (one per thread that runs a
  matmul), plus hipBLASLt's separate pool on ROCm.
Source of the SDPA rows: torch 2.13 aten/src/ATen/native/transformers/cuda/sdp_utils.cpp
(check_flash_attention_hardware_support sm80..sm121, can_use_mem_efficient_attention); of the workspace:
torch 2.13 (git cf30153c) aten/src/ATen/cuda/CublasHandlePool.cpp parseChosenWorkspaceSize: ":4096:2:16:8
default, 32MiB for Hopper and Blackwell" (compute capability major 9, 10 or 12), ROCm "32MiB default,
128MiB for gfx94x/gfx95x", and parseCUDABlasLtWorkspaceSize (CUDA: 1 MiB, unified into the cuBLAS
workspace by default; ROCm: 76 MiB for hipBLASLt in a pool of its own).
"""

from __future__ import annotations

from dataclasses import dataclass

from memfit.core.units import KiB, MiB

CUBLAS_WORKSPACE_BYTES_SM90 = 32 * MiB
"""cuBLAS workspace per handle on compute capability 9.x, 10.x and 12.x (Hopper, Blackwell): 4096 KiB × 8.
Source: CublasHandlePool.cpp parseChosenWorkspaceSize (torch 2.13); measured on H100: groundtruth "context"
case, alloc_after_matmul 100,663,296 − 2 × 32 MiB operands = 32 MiB."""
CUBLAS_WORKSPACE_BYTES_DEFAULT = 2 * 4096 * KiB + 8 * 16 * KiB
"""cuBLAS workspace per handle on other CUDA GPUs (Volta, Turing, Ampere, Ada): CUBLAS_WORKSPACE_CONFIG's
default ":4096:2:16:8", two 4096 KiB and eight 16 KiB chunks = 8,519,680 B. Source: as above (unmeasured)."""
HIPBLAS_WORKSPACE_BYTES_GFX94 = 128 * MiB
"""hipBLAS workspace per handle on gfx94x/gfx95x (MI300X, MI325X). Source: as above, USE_ROCM branch."""
HIPBLAS_WORKSPACE_BYTES_DEFAULT = 32 * MiB
"""hipBLAS workspace per handle on other ROCm GPUs (MI250X's gfx90a). Source: as above, USE_ROCM branch."""
HIPBLASLT_WORKSPACE_BYTES = 76 * MiB
"""hipBLASLt's own workspace per handle and stream (ROCm keeps the Lt pool separate; hipBLASLt is the
preferred GEMM backend on gfx90a/gfx942). Source: CublasHandlePool.cpp parseCUDABlasLtWorkspaceSize
"76*1024 KiB" (torch 2.13). Both pools counted: an assumption, unmeasured."""

FLASH_GRAD_HEAD_DIM_LIMITED = frozenset({"8.6", "8.7", "8.9", "12.0", "12.1"})
"""Compute capabilities whose flash backward refuses head dims in (192, 224]: SDPA picks another kernel when
inputs need grad. Source: sdp_utils.cpp check_requires_grad_and_head_dim_gt192_constraints_on_sm86_89_or_120
(the > 224-with-dropout case is not modelled: memfit trains without attention dropout by default)."""
FLASH_GRAD_HEAD_DIM_MIN = 192
FLASH_GRAD_HEAD_DIM_MAX = 224


@dataclass(frozen=True, slots=True, kw_only=True)
class Arch:
    """An accelerator architecture: what its torch build runs and the BLAS workspace it takes per handle."""

    name: str
    title: str                  # for messages: "Hopper", "CDNA3"
    vendor: str
    bf16: bool
    fp8: bool
    fp4: bool
    flash_attention: bool
    efficient_attention: bool
    efficient_bf16: bool
    blas_workspace_bytes: int
    unified_memory: bool = False
    note: str = ""


ARCHS: dict[str, Arch] = {arch.name: arch for arch in (
    Arch(name="volta", title="Volta", vendor="nvidia", bf16=False, fp8=False, fp4=False,
         flash_attention=False, efficient_attention=True, efficient_bf16=False,
         blas_workspace_bytes=CUBLAS_WORKSPACE_BYTES_DEFAULT,
         note="sm70: no bf16, no FlashAttention; SDPA takes the memory-efficient kernel for fp16/fp32 "
              "without GQA, math otherwise"),
    Arch(name="turing", title="Turing", vendor="nvidia", bf16=False, fp8=False, fp4=False,
         flash_attention=False, efficient_attention=True, efficient_bf16=False,
         blas_workspace_bytes=CUBLAS_WORKSPACE_BYTES_DEFAULT, note="sm75: as Volta"),
    Arch(name="ampere", title="Ampere", vendor="nvidia", bf16=True, fp8=False, fp4=False,
         flash_attention=True, efficient_attention=True, efficient_bf16=True,
         blas_workspace_bytes=CUBLAS_WORKSPACE_BYTES_DEFAULT,
         note="sm80/sm86: FP8 checkpoints run weight-only (dequantised in the GEMM); no FP8 tensor cores"),
    Arch(name="ada", title="Ada", vendor="nvidia", bf16=True, fp8=True, fp4=False, flash_attention=True,
         efficient_attention=True, efficient_bf16=True, blas_workspace_bytes=CUBLAS_WORKSPACE_BYTES_DEFAULT),
    Arch(name="hopper", title="Hopper", vendor="nvidia", bf16=True, fp8=True, fp4=False, flash_attention=True,
         efficient_attention=True, efficient_bf16=True, blas_workspace_bytes=CUBLAS_WORKSPACE_BYTES_SM90),
    Arch(name="blackwell", title="Blackwell", vendor="nvidia", bf16=True, fp8=True, fp4=True,
         flash_attention=True, efficient_attention=True, efficient_bf16=True,
         blas_workspace_bytes=CUBLAS_WORKSPACE_BYTES_SM90),
    Arch(name="cdna2", title="CDNA2", vendor="amd", bf16=True, fp8=False, fp4=False, flash_attention=True,
         efficient_attention=True, efficient_bf16=True,
         blas_workspace_bytes=HIPBLAS_WORKSPACE_BYTES_DEFAULT + HIPBLASLT_WORKSPACE_BYTES,
         note="ROCm: HIP context and kernel images assumed as CUDA's (unmeasured)"),
    Arch(name="cdna3", title="CDNA3", vendor="amd", bf16=True, fp8=True, fp4=False, flash_attention=True,
         efficient_attention=True, efficient_bf16=True,
         blas_workspace_bytes=HIPBLAS_WORKSPACE_BYTES_GFX94 + HIPBLASLT_WORKSPACE_BYTES,
         note="ROCm: FP8 is the fnuz variant; HIP context and kernel images assumed as CUDA's (unmeasured)"),
    Arch(name="gaudi", title="Gaudi", vendor="intel", bf16=True, fp8=True, fp4=False, flash_attention=True,
         efficient_attention=True, efficient_bf16=True, blas_workspace_bytes=0,
         note="Gaudi (HPU): no cuBLAS; attention as Habana's FusedSDPA (flash-style); runtime overheads "
              "assumed as CUDA's (unmeasured)"),
    Arch(name="apple", title="Apple silicon", vendor="apple", bf16=True, fp8=False, fp4=False,
         flash_attention=False, efficient_attention=False, efficient_bf16=False, blas_workspace_bytes=0,
         unified_memory=True,
         note="Apple silicon (MPS): unified memory, the GPU may wire up to Metal's "
              "recommendedMaxWorkingSetSize; SDPA assumed to materialise the scores (math); no cuBLAS; "
              "runtime overheads assumed as CUDA's (unmeasured)"),
)}
"""Capabilities per architecture (see the module docstring for each column's source)."""

DEFAULT_ARCH = "hopper"
"""The architecture assumed when no GPU (or an anonymous size) is given: every figure without a GPU is an
H100's."""


def arch_row(name: str) -> Arch:
    """The row of architecture `name`; a name not in the table (a `Gpu` built by hand) gets DEFAULT_ARCH's."""
    return ARCHS.get(name, ARCHS[DEFAULT_ARCH])


def flash_grad_refused(compute_capability: str, head_dim: int) -> bool:
    """Whether flash's backward refuses this head dim on this GPU (sm86/87/89/120/121, dims in (192, 224])."""
    return (compute_capability in FLASH_GRAD_HEAD_DIM_LIMITED
            and FLASH_GRAD_HEAD_DIM_MIN < head_dim <= FLASH_GRAD_HEAD_DIM_MAX)

"""llama.cpp on CPU as a reference: tiny GGUFs with random weights, loaded by llama.cpp (llama-cpp-python),
its own log lines for the model, KV and compute buffers set beside memfit's analytic figures.

Not a test dependency: llama-cpp-python compiles llama.cpp (CMake, ~20 minutes on 2 cores):
    CMAKE_ARGS="-DGGML_NATIVE=OFF" pip install llama-cpp-python==0.3.36
    python benchmarks/llama_cpp_reference.py [--out benchmarks/results/llama_cpp_reference.json]

For every case: the GGUF is written with the `gguf` package (llama architecture, dense or MoE; weights F32,
F16, Q8_0, Q4_0 quantized by gguf-py, Q4_K as zero blocks, which gguf-py cannot quantize), loaded with
n_gpu_layers=0, n_ctx per sequence, sequences (n_seq_max) and K/V cache types as listed. llama.cpp's
exact model bytes come from llama_model_size (the tensors; the CPU_Mapped buffer it logs is the file
range, alignment padding included); its KV and compute buffers from its log, printed in MiB to 2 places
(memfit's bytes are compared after the same rounding; the KV cells exactly).
The raw log lines are kept in the results file; tests/unit/test_llama_cpp_reference.py replays them.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import platform
import re
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

HIDDEN, HEADS, KV_HEADS, HEAD_DIM, FFN, LAYERS, VOCAB, CONTEXT = 256, 4, 2, 64, 512, 3, 1000, 8192
EXPERTS, EXPERTS_USED, EXPERT_FFN = 4, 2, 256
LOG_LINES = re.compile(r"model buffer size|KV buffer size|llama_kv_cache: size|compute buffer size|"
                       r"output buffer size|n_ctx |flash_attn")


@dataclass(frozen=True)
class Case:
    name: str
    weights: str          # GGML type of the 2-D weights
    n_ctx: int
    type_k: str = "f16"
    type_v: str = "f16"
    tied: bool = False
    moe: bool = False
    vocab: int = VOCAB
    ffn: int = FFN
    seqs: int = 1         # llama.cpp n_seq_max (n_ctx = n_ctx × seqs); memfit batch_size


CASES = (
    Case("llama-f32-ctx300", "F32", 300),
    Case("llama-f16-tied-ctx1000", "F16", 1000, tied=True),
    Case("llama-q8_0-ctx2048-kq8_0-vq8_0", "Q8_0", 2048, "q8_0", "q8_0"),
    Case("llama-q4_0-ctx700-kq8_0-vq4_0", "Q4_0", 700, "q8_0", "q4_0"),
    Case("llama-q4_k-ctx4096", "Q4_K", 4096),
    Case("llama-q4_k-ctx4096-kf32-vf32", "Q4_K", 4096, "f32", "f32"),
    Case("moe-q8_0-ctx512", "Q8_0", 512, moe=True),
    Case("moe-f16-tied-ctx1536-kq4_0", "F16", 1536, "q4_0", "q4_0", tied=True, moe=True),
    Case("llama-q8_0-vocab32000-ctx8192", "Q8_0", 8192, vocab=32000),
    Case("llama-q4_0-ffn2048-ctx1024", "Q4_0", 1024, ffn=2048),
    Case("llama-f16-2seq-ctx300", "F16", 300, seqs=2),
    Case("llama-q8_0-4seq-ctx1000", "Q8_0", 1000, seqs=4),
)


def _tensor(writer: Any, name: str, shape: tuple[int, ...], kind: str, rng: np.random.Generator) -> None:
    """One tensor of `shape` (numpy order, last dimension = GGML ne0) in GGML type `kind`."""
    import gguf

    values = rng.standard_normal(shape).astype(np.float32) * 0.02
    if kind == "F32":
        writer.add_tensor(name, values)
    elif kind == "F16":
        writer.add_tensor(name, values.astype(np.float16))
    else:
        qtype = gguf.GGMLQuantizationType[kind]
        if kind in ("Q8_0", "Q4_0"):
            data = gguf.quants.quantize(values, qtype)
        else:  # gguf-py has no K-quant quantizer: zero blocks are valid Q4_K blocks
            block, type_bytes = gguf.GGML_QUANT_SIZES[qtype]
            data = np.zeros((*shape[:-1], shape[-1] // block * type_bytes), dtype=np.uint8)
        writer.add_tensor(name, data, raw_dtype=qtype)


def write_gguf(path: Path, case: Case, *, seed: int = 0) -> Path:
    """A llama-architecture GGUF (dense, or with merged experts as llama.cpp stores Mixtral)."""
    import gguf

    rng = np.random.default_rng(seed)
    writer = gguf.GGUFWriter(str(path), "llama")
    ffn = EXPERT_FFN if case.moe else case.ffn   # llama.cpp's llama MoE: experts of feed_forward_length
    for key, value in {"block_count": LAYERS, "context_length": CONTEXT, "embedding_length": HIDDEN,
                       "feed_forward_length": ffn, "attention.head_count": HEADS,
                       "attention.head_count_kv": KV_HEADS, "rope.dimension_count": HEAD_DIM,
                       "vocab_size": case.vocab}.items():
        writer.add_uint32(f"llama.{key}", value)
    if case.moe:
        writer.add_uint32("llama.expert_count", EXPERTS)
        writer.add_uint32("llama.expert_used_count", EXPERTS_USED)
    writer.add_float32("llama.attention.layer_norm_rms_epsilon", 1e-5)
    writer.add_float32("llama.rope.freq_base", 10000.0)
    writer.add_string("tokenizer.ggml.model", "none")   # llama.cpp: LLAMA_VOCAB_TYPE_NONE, vocab_size dummies
    w = case.weights
    _tensor(writer, "token_embd.weight", (case.vocab, HIDDEN), w, rng)
    _tensor(writer, "output_norm.weight", (HIDDEN,), "F32", rng)
    if not case.tied:
        _tensor(writer, "output.weight", (case.vocab, HIDDEN), w, rng)
    q, kv = HEADS * HEAD_DIM, KV_HEADS * HEAD_DIM
    for i in range(LAYERS):
        _tensor(writer, f"blk.{i}.attn_norm.weight", (HIDDEN,), "F32", rng)
        _tensor(writer, f"blk.{i}.attn_q.weight", (q, HIDDEN), w, rng)
        _tensor(writer, f"blk.{i}.attn_k.weight", (kv, HIDDEN), w, rng)
        _tensor(writer, f"blk.{i}.attn_v.weight", (kv, HIDDEN), w, rng)
        _tensor(writer, f"blk.{i}.attn_output.weight", (HIDDEN, q), w, rng)
        _tensor(writer, f"blk.{i}.ffn_norm.weight", (HIDDEN,), "F32", rng)
        if case.moe:
            _tensor(writer, f"blk.{i}.ffn_gate_inp.weight", (EXPERTS, HIDDEN), "F32", rng)
            _tensor(writer, f"blk.{i}.ffn_gate_exps.weight", (EXPERTS, EXPERT_FFN, HIDDEN), w, rng)
            _tensor(writer, f"blk.{i}.ffn_up_exps.weight", (EXPERTS, EXPERT_FFN, HIDDEN), w, rng)
            _tensor(writer, f"blk.{i}.ffn_down_exps.weight", (EXPERTS, HIDDEN, EXPERT_FFN), w, rng)
        else:
            _tensor(writer, f"blk.{i}.ffn_gate.weight", (case.ffn, HIDDEN), w, rng)
            _tensor(writer, f"blk.{i}.ffn_up.weight", (case.ffn, HIDDEN), w, rng)
            _tensor(writer, f"blk.{i}.ffn_down.weight", (HIDDEN, case.ffn), w, rng)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def run_llama_cpp(path: Path, case: Case) -> dict[str, Any]:
    """Load `path` with llama.cpp on the CPU; its log lines about buffers and llama_model_size's bytes."""
    import llama_cpp as lc

    lines: list[str] = []

    @lc.llama_log_callback
    def collect(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
        lines.append(text.decode("utf-8", "replace"))

    lc.llama_log_set(collect, ctypes.c_void_p())
    lc.llama_backend_init()
    mparams = lc.llama_model_default_params()
    mparams.n_gpu_layers = 0
    model = lc.llama_model_load_from_file(str(path).encode(), mparams)
    if not model:
        raise RuntimeError(f"llama.cpp could not load {path}:\n{''.join(lines)[-2000:]}")
    cparams = lc.llama_context_default_params()
    cparams.n_ctx, cparams.n_seq_max = case.n_ctx * case.seqs, case.seqs
    cparams.type_k = getattr(lc, f"GGML_TYPE_{case.type_k.upper()}")
    cparams.type_v = getattr(lc, f"GGML_TYPE_{case.type_v.upper()}")
    ctx = lc.llama_init_from_model(model, cparams)
    if not ctx:
        raise RuntimeError(f"llama.cpp could not make a context for {case}:\n{''.join(lines)[-2000:]}")
    model_bytes = int(lc.llama_model_size(model))
    lc.llama_free(ctx)
    lc.llama_model_free(model)
    text = "".join(lines)
    return {"model_size_bytes": model_bytes,
            "log": [line for line in text.splitlines() if LOG_LINES.search(line)]}


def memfit_figures(path: Path, case: Case) -> dict[str, int]:
    """memfit's analytic figures for the same GGUF, all layers on the CPU (n_gpu_layers=0)."""
    import memfit
    from memfit.core.choices import Runtime
    from memfit.core.dtypes import DType
    from memfit.core.workload import Inference
    from memfit.sources.gguf import load_gguf

    types = {"f16": DType.FP16, "f32": DType.FP32, "q8_0": DType.Q8_0, "q4_0": DType.Q4_0}
    spec = load_gguf(path)
    workload = Inference(runtime=Runtime.LLAMA_CPP, prompt_tokens=case.n_ctx, new_tokens=0, n_gpu_layers=0,
                         batch_size=case.seqs,
                         kv_cache_dtype=types[case.type_k], v_cache_dtype=types[case.type_v])
    est = memfit.estimate(spec, workload, engine="analytic")
    prefill = est.phases[-1]
    host = prefill.host.flat() if prefill.host is not None else {}
    device = prefill.memory.flat()
    return {
        "model_bytes": sum(host.get(name, 0) for name in ("embeddings", "layers", "lm_head")),
        "kv_bytes": host.get("kv_cache", 0),
        "compute_bytes": device.get("activations/compute_buffer", 0),
        "output_bytes": host.get("output_buffer", 0),
    }


MIB = 2**20


def parse_log(lines: list[str]) -> dict[str, float | int]:
    """The buffer sizes llama.cpp logged (MiB, 2 places), summed over buffer types, and the KV cells."""
    out: dict[str, float | int] = {"model_mib": 0.0, "kv_mib": 0.0, "compute_mib": 0.0, "output_mib": 0.0}
    for line in lines:
        found = re.search(r"(model|KV|compute|output) buffer size = +([0-9.]+) MiB", line)
        if found:
            key = {"model": "model_mib", "KV": "kv_mib", "compute": "compute_mib", "output": "output_mib"}
            out[key[found[1]]] = round(float(out[key[found[1]]]) + float(found[2]), 2)
        cells = re.search(r"llama_kv_cache: size = +[0-9.]+ MiB \( *(\d+) cells.*K \((\w+)\): +([0-9.]+) "
                          r"MiB, V \((\w+)\): +([0-9.]+) MiB", line)
        if cells:
            out.update(kv_cells=int(cells[1]), k_mib=float(cells[3]), v_mib=float(cells[5]))
    return out


def compare(case: Case, ref: dict[str, Any], ours: dict[str, int]) -> dict[str, Any]:
    logged = parse_log(ref["log"])
    def mib(nbytes: int) -> float:
        return round(nbytes / MIB, 2)
    return {
        "case": case.name,
        "model_bytes": {"llama_cpp": ref["model_size_bytes"], "memfit": ours["model_bytes"],
                        "exact": ref["model_size_bytes"] == ours["model_bytes"]},
        "model_mib": {"llama_cpp": logged["model_mib"], "memfit": mib(ours["model_bytes"])},
        "kv_mib": {"llama_cpp": logged["kv_mib"], "memfit": mib(ours["kv_bytes"]),
                   "cells": logged.get("kv_cells"), "exact": logged["kv_mib"] == mib(ours["kv_bytes"])},
        "compute_mib": {"llama_cpp": logged["compute_mib"], "memfit": mib(ours["compute_bytes"]),
                        "error": round(ours["compute_bytes"] / MIB / logged["compute_mib"] - 1, 4)
                        if logged["compute_mib"] else None},
        "output_mib": {"llama_cpp": logged["output_mib"], "memfit": mib(ours["output_bytes"])},
    }


def versions() -> dict[str, str]:
    from importlib.metadata import version

    import llama_cpp

    from memfit._version import __version__

    info = llama_cpp.llama_print_system_info().decode().strip()
    libs = sorted(p.name for p in Path(llama_cpp.llama_cpp._base_path).glob("lib*.so.*.*"))
    return {"llama_cpp_python": llama_cpp.__version__, "shared_libraries": ", ".join(libs),
            "gguf": version("gguf"), "memfit": __version__,
            "python": platform.python_version(), "machine": platform.machine(), "llama_cpp_system": info}


def markdown(result: dict[str, Any]) -> str:
    """The comparison as a Markdown table, versions first."""
    lines = ["# llama.cpp on CPU vs memfit analytic", "",
             "Versions: " + ", ".join(f"{k} {v}" for k, v in result["versions"].items()), "",
             "Model: exact bytes (llama_model_size). KV and compute: MiB to 2 places as llama.cpp logs them; "
             "compute error = memfit / llama.cpp − 1.", "",
             "| case | model B llama.cpp | model B memfit | KV cells | KV MiB llama.cpp | KV MiB memfit "
             "| compute MiB llama.cpp | compute MiB memfit | compute error |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in result["comparison"]:
        m, kv, c = row["model_bytes"], row["kv_mib"], row["compute_mib"]
        lines.append(f"| {row['case']} | {m['llama_cpp']:,} | {m['memfit']:,} | {kv['cells']} | "
                     f"{kv['llama_cpp']:.2f} | {kv['memfit']:.2f} | {c['llama_cpp']:.2f} | "
                     f"{c['memfit']:.2f} | {c['error']:+.1%} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="benchmarks/results/llama-cpp-reference.json",
                        help="results JSON; a Markdown table is written beside it (.md)")
    parser.add_argument("--fixture", default="tests/data/llama_cpp_reference_logs.json",
                        help="the recorded logs tests/unit/test_llama_cpp_reference.py replays")
    args = parser.parse_args(argv)
    rows, records = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for case in CASES:
            path = write_gguf(Path(tmp) / f"{case.name}.gguf", case)
            ref = run_llama_cpp(path, case)
            ours = memfit_figures(path, case)
            rows.append(compare(case, ref, ours))
            records.append({"case": case.__dict__, "llama_cpp": ref, "memfit": ours})
    result = {"versions": versions(), "dims": {"hidden": HIDDEN, "heads": HEADS, "kv_heads": KV_HEADS,
              "head_dim": HEAD_DIM, "ffn": FFN, "layers": LAYERS, "vocab": VOCAB, "experts": EXPERTS,
              "experts_used": EXPERTS_USED, "expert_ffn": EXPERT_FFN},
              "comparison": rows, "records": records}
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    Path(args.out).with_suffix(".md").write_text(markdown(result))
    fixture = {"versions": result["versions"], "source": "benchmarks/llama_cpp_reference.py",
               "cases": [{"case": r["case"], "llama_model_size": r["llama_cpp"]["model_size_bytes"],
                          "log": r["llama_cpp"]["log"]} for r in records]}
    Path(args.fixture).write_text(json.dumps(fixture, indent=1) + "\n")
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

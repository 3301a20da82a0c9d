"""Pre-quantized checkpoints: quantization_config → exact stored bytes, and what each runtime holds.

Every expected byte count below is derived by hand from the format's tensor layout (sources in
src/memfit/sources/quant_config.py's docstring), not read from memfit's output.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from memfit import api
from memfit.core.checkpoint_load import compute_capability, loaded_quant
from memfit.core.dtypes import ScaleGrid
from memfit.core.errors import ConfigError, InvalidWorkload
from memfit.core.estimate import estimate
from memfit.core.result import Estimate
from memfit.core.spec import ModelSource, ModelSpec
from memfit.core.workload import Inference, Lora, Parallelism, Training
from memfit.sources._config import build_spec
from memfit.sources.catalog import get_gpu, load_catalog_model
from memfit.sources.quant_config import checkpoint_quant

# One Llama layer: hidden 256, 4 heads × 64 (q, o: 256×256), 2 KV heads (k, v: 128×256), MLP 640,
# untied vocab 1000. Unquantized parts at 2 bytes: norms 2×256×2 = 1,024, final norm 512, embeddings and
# head 1000×256×2 = 512,000 each, rotary inv_freq 32 fp32 = 128 → 1,025,664 bytes besides the Linears.
TINY = {"model_type": "llama", "hidden_size": 256, "num_hidden_layers": 1, "num_attention_heads": 4,
        "num_key_value_heads": 2, "head_dim": 64, "intermediate_size": 640, "vocab_size": 1000,
        "max_position_embeddings": 4096, "tie_word_embeddings": False, "torch_dtype": "bfloat16"}
NOT_LINEARS = 1_024 + 512 + 512_000 + 512_000 + 128


def _spec(quantization_config: dict[str, Any] | None) -> ModelSpec:
    config = dict(TINY)
    if quantization_config is not None:
        config["quantization_config"] = quantization_config
    source = ModelSource(kind="config", ref="tiny", config_json=json.dumps(config))
    return build_spec(config, name="tiny", source=source)


def _weights(spec: ModelSpec, **workload: Any) -> int:
    est = estimate(spec, Inference(prompt_tokens=16, **workload))
    return est.phase("load").memory.bytes_of("weights")


def test_scale_grids_count_blocks_by_shape() -> None:
    # FP8 128×128 blocks on DeepSeek-V3's q_b_proj (24576 × 1536): 192 × 12 = 2,304 fp32 scales
    assert ScaleGrid(name="s", rows=128, cols=128, bits=32).entries_bits(24576, 1536) == 2_304 * 32
    # a partial block still takes a scale: 129 × 130 → 2 × 2
    assert ScaleGrid(name="s", rows=128, cols=128, bits=32).entries_bits(129, 130) == 4 * 32
    # MXFP4: one uint8 per 32 inputs of each row: 2880 rows × 90
    assert ScaleGrid(name="s", rows=1, cols=32, bits=8).entries_bits(2880, 2880) == 2880 * 90 * 8
    # GPTQ qzeros: 4-bit zeros of 4096 rows packed in int32 (512 words) for each of 32 groups
    zeros = ScaleGrid(name="z", rows=1, cols=128, bits=4, pack_bits=32)
    assert zeros.entries_bits(4096, 4096) == 32 * 512 * 32
    # per tensor and per input feature (g_idx)
    assert ScaleGrid(name="t", rows=0, cols=0, bits=32).entries_bits(7, 9) == 32
    assert ScaleGrid(name="g", rows=0, cols=1, bits=32).entries_bits(7, 9) == 9 * 32


def test_fp8_block_checkpoint_counts_codes_and_block_scales() -> None:
    spec = _spec({"quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic",
                  "weight_block_size": [128, 128]})
    # codes 1 B each: q 65,536, k 32,768, v 32,768, o 65,536, gate/up/down 163,840 each = 688,128;
    # fp32 scales per 128×128 block: q 2×2, k 1×2, v 1×2, o 2×2, gate 5×2, up 5×2, down 2×5 = 42 × 4 B = 168
    assert _weights(spec) == 688_128 + 168 + NOT_LINEARS


def test_gptq_checkpoint_counts_packed_codes_zeros_scales_and_g_idx() -> None:
    spec = _spec({"quant_method": "gptq", "bits": 4, "group_size": 128, "desc_act": False, "sym": True})
    # per (out, in): codes out·in/2, fp16 scales ceil(in/128)·out·2, int32 qzeros ceil(in/128)·ceil(out/8)·4,
    # int32 g_idx in·4.  q, o (256, 256): 32,768 + 1,024 + 256 + 1,024 = 35,072;
    # k, v (128, 256): 16,384 + 512 + 128 + 1,024 = 18,048; gate, up (640, 256): 81,920 + 2,560 + 640 + 1,024
    # = 86,144; down (256, 640): 81,920 + 2,560 + 640 + 2,560 = 87,680.
    linears = 2 * 35_072 + 2 * 18_048 + 2 * 86_144 + 87_680
    assert _weights(spec) == linears + NOT_LINEARS


def test_awq_checkpoint_has_no_g_idx() -> None:
    spec = _spec({"quant_method": "awq", "bits": 4, "group_size": 128, "zero_point": True, "version": "gemm"})
    # the GPTQ figures less g_idx (4 B per input feature: 256 for six matrices, 640 for down_proj)
    linears = 2 * 35_072 + 2 * 18_048 + 2 * 86_144 + 87_680 - (6 * 256 + 640) * 4
    assert _weights(spec) == linears + NOT_LINEARS


def test_compressed_tensors_w4a16_group_checkpoint() -> None:
    qc = {"quant_method": "compressed-tensors", "format": "pack-quantized", "ignore": ["lm_head"],
          "config_groups": {"group_0": {"targets": ["Linear"], "weights": {
              "num_bits": 4, "type": "int", "strategy": "group", "group_size": 128, "symmetric": True}}}}
    spec = _spec(qc)
    # codes out·in/2; bf16 scales ceil(in/128)·out·2; int64[2] weight_shape = 16 B per matrix (no zeros:
    # symmetric). q, o: 32,768 + 1,024 + 16; k, v: 16,384 + 512 + 16; gate, up: 81,920 + 2,560 + 16;
    # down: 81,920 + 2,560 + 16.
    linears = 2 * 33_808 + 2 * 16_912 + 2 * 84_496 + 84_496
    assert spec.stored_quant is not None
    # vLLM keeps it packed; transformers decompresses it on the first forward pass (bf16 weights)
    assert _weights(spec, runtime="vllm") == linears + NOT_LINEARS
    assert _weights(spec) == _weights(_spec(None))


def test_nvfp4_and_fp8_channel_compressed_tensors() -> None:
    nvfp4 = checkpoint_quant({"quantization_config": {
        "quant_method": "compressed-tensors", "format": "nvfp4-pack-quantized",
        "config_groups": {"g": {"targets": ["Linear"], "weights": {
            "num_bits": 4, "type": "float", "strategy": "tensor_group", "group_size": 16}}}}}, name="m")
    assert nvfp4 is not None
    assert nvfp4.bits_per_weight == 4
    # e4m3 scale per 16 inputs, two fp32 global scales, the packed weight_shape
    grids = [(g.rows, g.cols, g.bits) for g in nvfp4.grids]
    assert grids == [(1, 16, 8), (0, 0, 32), (0, 0, 32), (0, 0, 128)]
    fp8 = checkpoint_quant({"quantization_config": {
        "quant_method": "compressed-tensors", "format": "float-quantized",
        "config_groups": {"g": {"targets": ["Linear"], "weights": {
            "num_bits": 8, "type": "float", "strategy": "channel", "symmetric": True}}}}}, name="m")
    assert fp8 is not None
    assert [(g.rows, g.cols, g.bits) for g in fp8.grids] == [(1, 0, 16)]


def test_modules_to_not_convert_map_to_roles() -> None:
    q = checkpoint_quant({"quantization_config": {
        "quant_method": "fp8", "weight_block_size": [128, 128],
        "modules_to_not_convert": ["model.layers.*.self_attn", "re:.*mlp.gate$",
                                   "model.layers.3.mlp.up_proj"]}},
        name="m")
    assert q is not None
    assert {"attention", "router"} <= q.keeps
    assert "model.layers.3.mlp.up_proj" in q.note      # a single layer is named, not silently dropped


def test_gpt_oss_120b_mxfp4_experts_by_hand() -> None:
    spec = load_catalog_model("gpt-oss-120b")
    assert spec is not None
    assert spec.stored_quant is not None
    assert spec.stored_quant.kind == "mxfp4"
    est = estimate(spec, Inference(prompt_tokens=16, runtime="vllm"))
    weights = est.phase("load").memory.flat()
    # per layer, 128 experts: gate_up codes 128·5760·2880/2 = 1,061,683,200, scales 128·5760·90 = 66,355,200;
    # down codes 128·2880·2880/2 = 530,841,600, scales 128·2880·90 = 33,177,600; bf16 biases
    # 128·(5760 + 2880)·2 = 2,211,840 → 1,694,269,440 per layer, 36 layers
    assert weights["weights/layers/experts"] == 36 * 1_694_269_440
    # the attention stays bf16: q 2880→4096, k/v 2880→512, o 4096→2880 with biases, 64 sinks
    attention = (2880 * 4096 + 4096 + 2 * (2880 * 512 + 512) + 4096 * 2880 + 2880 + 64) * 2
    assert weights["weights/layers/attention"] == 36 * attention


def test_gpt_oss_120b_fits_one_h100_under_vllm() -> None:
    est = api.estimate("gpt-oss-120b", Inference(prompt_tokens=2048, runtime="vllm"), gpu="H100")
    assert est.fits is True
    assert est.capacity is not None
    assert est.capacity.tokens > 2048
    # transformers dequantizes MXFP4 when asked (or without its kernels): bf16 experts no longer fit
    bf16 = api.estimate("gpt-oss-120b", Inference(prompt_tokens=2048, quant="dequantized"), gpu="H100")
    assert bf16.fits is False


def test_deepseek_r1_fits_8_h200_with_a_kv_capacity_in_range() -> None:
    workload = Inference(prompt_tokens=2048, runtime="vllm", parallel=Parallelism(tp=8))
    est = api.estimate("DeepSeek-R1", workload, gpu="H200")
    weights = est.phase("load").memory.bytes_of("weights")
    # FP8: about 671e9 parameters at 1 B per GPU share → 78-80 GiB per GPU of 8, not the bf16 ~156 GiB
    assert 75 * 2**30 < weights < 82 * 2**30
    # real vLLM start-ups of DeepSeek-R1 on 8×H200 report about 650,000 KV tokens (issue 13)
    assert est.fits is True
    assert est.capacity is not None
    assert 450_000 < est.capacity.tokens < 850_000


def test_runtime_rules_and_overrides() -> None:
    ct = _spec({"quant_method": "compressed-tensors", "format": "float-quantized", "config_groups": {"g": {
        "targets": ["Linear"], "weights": {"num_bits": 8, "type": "float", "strategy": "channel"}}}})
    quant, notes = loaded_quant(ct, Inference(prompt_tokens=8))
    assert not quant.is_quantized
    assert "decompresses" in notes[0]
    quant, notes = loaded_quant(ct, Inference(prompt_tokens=8, runtime="vllm"))
    assert quant is ct.stored_quant
    assert "vLLM keeps" in notes[0]
    quant, notes = loaded_quant(ct, Inference(prompt_tokens=8, runtime="llama.cpp"))
    assert not quant.is_quantized
    assert "GGUF" in notes[0]
    quant, notes = loaded_quant(ct, Inference(prompt_tokens=8, quant="nf4"))
    assert quant.name == "nf4"
    assert "replaces" in notes[0]
    quant, notes = loaded_quant(ct, Inference(prompt_tokens=8, quant="dequantized", runtime="vllm"))
    assert not quant.is_quantized
    assert "--quant dequantized" in notes[0]


def test_the_gpu_decides_whether_transformers_keeps_fp8_or_mxfp4() -> None:
    # FineGrainedFP8 needs compute capability 8.9 (Ada / Hopper); the MXFP4 kernels need 7.5 (Turing on).
    fp8 = _spec({"quant_method": "fp8", "weight_block_size": [128, 128]})
    mxfp4 = _spec({"quant_method": "mxfp4"})
    a100, l40s, v100, t4 = (get_gpu(n) for n in ("A100-SXM-80GB", "L40S-48GB", "V100-SXM2-32GB", "T4-16GB"))
    quant, notes = loaded_quant(fp8, Inference(prompt_tokens=8), a100)
    assert not quant.is_quantized
    assert "8.0 < 8.9" in notes[0]
    quant, _ = loaded_quant(fp8, Inference(prompt_tokens=8), l40s)
    assert quant is fp8.stored_quant
    # vLLM keeps FP8 on an A100 and runs it weight-only through Marlin
    quant, notes = loaded_quant(fp8, Inference(prompt_tokens=8, runtime="vllm"), a100)
    assert quant is fp8.stored_quant
    assert "Marlin" in notes[0]
    quant, notes = loaded_quant(mxfp4, Inference(prompt_tokens=8, dtype="fp16"), v100)
    assert not quant.is_quantized
    assert "7.0 < 7.5" in notes[0]
    quant, _ = loaded_quant(mxfp4, Inference(prompt_tokens=8, dtype="fp16"), t4)
    assert quant is mxfp4.stored_quant
    # the estimate on an A100 counts the FP8 checkpoint's Linears dequantized: 2 bytes per weight
    linears = 2 * 256 * 256 + 2 * 128 * 256 + 3 * 640 * 256
    est = estimate(fp8, Inference(prompt_tokens=16), a100)
    assert est.phase("load").memory.bytes_of("weights") == NOT_LINEARS + 2 * linears


def test_rocm_and_non_cuda_devices_follow_what_torch_reports() -> None:
    # torch on ROCm reports the HIP device's major/minor: gfx942 -> (9, 4), gfx90a -> (9, 0), so transformers'
    # "compute capability >= 8.9" check passes on both; Apple's MPS and Gaudi's HPU are no CUDA device, so
    # the FP8 and MXFP4 quantizers take their dequantize branch.
    mi300x, mi250x, mac, gaudi = (get_gpu(n) for n in ("MI300X-192GB", "MI250X-GCD-64GB",
                                                       "Apple-Silicon-64GB", "Gaudi-3-128GB"))
    assert compute_capability(mi300x) == (9, 4)
    assert compute_capability(mi250x) == (9, 0)
    assert compute_capability(mac) is None
    assert compute_capability(gaudi) is None
    fp8 = _spec({"quant_method": "fp8", "weight_block_size": [128, 128]})
    mxfp4 = _spec({"quant_method": "mxfp4"})
    quant, _ = loaded_quant(fp8, Inference(prompt_tokens=8), mi300x)
    assert quant is fp8.stored_quant
    for gpu in (mac, gaudi):
        for spec in (fp8, mxfp4):
            quant, notes = loaded_quant(spec, Inference(prompt_tokens=8), gpu)
            assert not quant.is_quantized
            assert "CUDA or XPU" in notes[0]


def test_llama_cpp_keeps_gpt_oss_mxfp4_experts_as_ggml_mxfp4() -> None:
    # convert_hf_to_gguf's GptOssModel repacks the MXFP4 experts as GGML MXFP4 (16 bytes of codes + one
    # e8m0 scale per 32 weights = 17/32 B) and writes every other tensor in the outtype (bf16 here).
    # gpt-oss-20b: 24 layers × 32 experts × (2 × 2,880 × 2,880 + 2,880 × 2,880) = 19,110,297,600 expert
    # weights of 20,914,757,184 parameters: 19,110,297,600 × 17 / 32 + 1,804,459,584 × 2 = 13,761,264,768 B,
    # on the GPU but for token_embd (host RAM); a convert log shows "total_size = 13.8G" for this model.
    spec = load_catalog_model("gpt-oss-20b")
    est = estimate(spec, Inference(prompt_tokens=16, runtime="llama.cpp"))
    load = est.phase("load")
    assert load.memory.bytes_of("weights") + load.host.bytes_of("embeddings") == 13_761_264_768
    assert any("GGML MXFP4" in a for a in est.assumptions)


def test_training_a_checkpoint_format() -> None:
    fp8 = _spec({"quant_method": "fp8", "weight_block_size": [128, 128]})
    quant, notes = loaded_quant(fp8, Training(seq_len=64, method="lora", lora=Lora(rank=8, alpha=16)))
    assert not quant.is_quantized
    assert "dequantize=True" in notes[0]
    gptq = _spec({"quant_method": "gptq", "bits": 4, "group_size": 128})
    with pytest.raises(InvalidWorkload, match="--quant dequantized"):
        loaded_quant(gptq, Training(seq_len=64, method="lora", lora=Lora(rank=8, alpha=16)))


def test_unknown_or_malformed_quantization_config() -> None:
    spec = _spec({"quant_method": "bitnet"})
    with pytest.raises(InvalidWorkload, match="'bitnet' is not a format memfit sizes"):
        estimate(spec, Inference(prompt_tokens=8))
    assert _weights(spec, quant="dequantized") == _weights(_spec(None))
    with pytest.raises(ConfigError, match="quantization_config"):
        _spec({"quant_method": "gptq", "bits": 5})
    with pytest.raises(ConfigError, match="quantization_config"):
        _spec({"quant_method": "compressed-tensors", "config_groups": {}})


def test_estimate_with_a_checkpoint_format_round_trips_through_json() -> None:
    spec = _spec({"quant_method": "gptq", "bits": 4, "group_size": 128})
    est = estimate(spec, Inference(prompt_tokens=16, runtime="vllm"), api.catalog_gpus()[0])
    back = Estimate.from_dict(json.loads(json.dumps(est.to_dict())))
    assert back.model.stored_quant == spec.stored_quant
    assert back.capacity == est.capacity


def test_tp_beyond_the_kv_heads_replicates_them_and_vllm_keeps_mla_absorbed_copies() -> None:
    spec = load_catalog_model("Llama-3.1-8B")
    assert spec is not None
    est = estimate(spec, Inference(prompt_tokens=16, runtime="vllm", parallel=Parallelism(tp=16)))
    flat = est.phase("load").memory.flat()
    # q and o (4096 × 4096 × 2 B) split 16 ways; k and v (1024 × 4096 × 2 B, 8 KV heads) only 8 ways: each
    # rank keeps one whole KV head → per layer 2 × 2,097,152 + 2 × 1,048,576 = 6,291,456 B, 32 layers
    assert flat["weights/layers/attention"] == 32 * 6_291_456
    r1 = load_catalog_model("DeepSeek-R1")
    assert r1 is not None
    est = estimate(r1, Inference(prompt_tokens=16, runtime="vllm", parallel=Parallelism(tp=8)))
    # vLLM's MLA keeps a bf16 kv_b_proj (128 heads × (128 + 128) × 512) per layer, split 8 ways: 61 layers
    assert est.phase("load").memory.flat()["weights/mla_absorbed"] == 61 * 128 * 256 * 512 // 8 * 2


def test_measure_refuses_a_packed_checkpoint_it_cannot_build_from_random_weights() -> None:
    from memfit.core.errors import EngineUnavailable
    from memfit.measure import measure_record

    spec = load_catalog_model("gpt-oss-20b")
    assert spec is not None
    with pytest.raises(EngineUnavailable, match="--quant dequantized"):
        measure_record(spec, Inference(prompt_tokens=16))

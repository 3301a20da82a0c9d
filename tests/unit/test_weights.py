"""Weight bytes (core/weights.py) under dtypes and quantization formats, computed by hand."""

from memfit.api import load_model
from memfit.core.choices import Runtime
from memfit.core.dtypes import DType, quant
from memfit.core.spec import AttentionSpec, LayerSpec, MlpSpec, ModelSource, ModelSpec, MoeSpec
from memfit.core.weights import unconverted_experts_note, weights

HIDDEN = 4096
TRANSFORMERS = Runtime.TRANSFORMERS


def _square_spec() -> ModelSpec:
    """One layer whose q, k, v and o are each a 4096×4096 matrix (MHA, 32 heads of 128)."""
    layer = LayerSpec(attention=AttentionSpec(num_heads=32, num_kv_heads=32, head_dim=128),
                      mlp=MlpSpec(intermediate_size=64, gated=True))
    return ModelSpec(name="square", family="llama", vocab_size=128, hidden_size=HIDDEN,
                     max_position_embeddings=4096, tie_word_embeddings=True, layers=(layer,),
                     source=ModelSource(kind="config", ref="square"))


def test_nf4_one_4096x4096_matrix():
    """nf4: 16,777,216 weights × 9/2 bits = 9,437,184 B (8,388,608 packed + 1,048,576 absmax) + 64 B code."""
    term = weights(_square_spec(), dtype=DType.BF16, quant=quant("nf4"), runtime=TRANSFORMERS)
    # q, k, v, o: 4 × (9,437,184 + 64) = 37,749,008
    assert term.child("layers").bytes_of("attention") == 4 * (9_437_184 + 64)


def test_nf4_double_quant_one_4096x4096_matrix():
    """nf4-dq: 16,777,216 × 2113/512 / 8 = 8,654,848 B, plus 64 + 1024 + 4 B of codes and offset."""
    # 8,388,608 packed + 262,144 uint8 absmax + 1,024 × 4 fp32 second-level absmax = 8,654,848
    term = weights(_square_spec(), dtype=DType.BF16, quant=quant("nf4-dq"), runtime=TRANSFORMERS)
    assert term.child("layers").bytes_of("attention") == 4 * (8_654_848 + 1092)


def test_llama_3_1_8b_bf16_weights():
    """Llama-3.1-8B in bf16: 8,030,261,248 params × 2 B = 16,060,522,496 B, plus the 256 B rotary buffer."""
    term = weights(load_model("Llama-3.1-8B"), dtype=DType.BF16, quant=quant("none"), runtime=TRANSFORMERS)
    assert term.nbytes - term.bytes_of("buffers") == 16_060_522_496


def test_llama_3_1_8b_int8_matches_measured_storage():
    """int8: 6,979,321,856 linear weights × 1 B + 43,008 rows × 32 layers × 4 B SCB + the bf16 rest."""
    # 6,979,321,856 + 5,505,024 + embeddings and lm_head 2,101,346,304 + norms 532,480 = 9,086,705,664
    # (groundtruth l8b-int8 load end_alloc 9,086,706,688 = this + 1,024 B of buffers and rounding)
    term = weights(load_model("Llama-3.1-8B"), dtype=DType.BF16, quant=quant("int8"), runtime=TRANSFORMERS)
    assert term.nbytes - term.bytes_of("buffers") == 9_086_705_664


def test_bnb_leaves_lm_head_in_compute_dtype():
    """nf4 on Llama-3.1-8B: lm_head stays bf16, 128,256 × 4,096 × 2 = 1,050,673,152 B."""
    term = weights(load_model("Llama-3.1-8B"), dtype=DType.BF16, quant=quant("nf4"), runtime=TRANSFORMERS)
    assert term.bytes_of("lm_head") == 1_050_673_152


def test_tied_embeddings_count_once():
    """Llama-3.2-1B ties lm_head to the embeddings: no lm_head bytes."""
    term = weights(load_model("Llama-3.2-1B"), dtype=DType.BF16, quant=quant("none"), runtime=TRANSFORMERS)
    assert term.bytes_of("lm_head") == 0
    assert term.bytes_of("embeddings") == 128_256 * 2048 * 2


def test_bnb_keeps_fused_moe_experts_unquantized():
    """bnb converts nn.Linear only: fused 3-D expert Parameters stay bf16 (2 experts × 3 × 8 × 16 × 2 B)."""
    expert = MlpSpec(intermediate_size=16, gated=True)
    layer = LayerSpec(attention=AttentionSpec(num_heads=2, num_kv_heads=2, head_dim=4),
                      mlp=MoeSpec(num_experts=2, top_k=1, expert=expert))
    spec = ModelSpec(name="moe", family="qwen3_moe", vocab_size=32, hidden_size=8,
                     max_position_embeddings=64, tie_word_embeddings=True, layers=(layer,),
                     source=ModelSource(kind="config", ref="moe"))
    term = weights(spec, dtype=DType.BF16, quant=quant("nf4"), runtime=TRANSFORMERS)
    # gate_up (2, 32, 8) + down (2, 8, 16) = 512 + 256 weights × 2 B = 1,536 B
    assert term.child("layers").bytes_of("experts") == 1_536
    # the tree names the format each component is held in: the experts bf16, the attention nf4, and a line
    # says how many expert weights stay unquantized
    assert term.child("layers").child("experts").note == "bf16"
    assert term.child("layers").child("attention").note == "nf4"
    assert unconverted_experts_note(spec, quant("nf4"), kept="bf16").startswith(
        "768 fused expert weights of moe stay unquantized in bf16")
    assert unconverted_experts_note(spec, quant("gptq-4bit-g128"), kept="bf16") == ""


def test_gguf_q4_k_m_output_is_q6_k():
    """Q4_K_M stores output.weight as Q6_K: 128,256 × 4,096 × 105/16 / 8 = 430,940,160 B."""
    term = weights(load_model("Llama-3.1-8B"), dtype=DType.BF16, quant=quant("gguf-Q4_K_M"),
                   runtime=Runtime.LLAMA_CPP)
    assert term.bytes_of("lm_head") == 430_940_160


def _with_checkpoint(fmt: str, tensors: tuple, quant_method: str | None = None) -> ModelSpec:
    from dataclasses import replace

    from memfit.core.spec import CheckpointInfo

    return replace(_square_spec(), checkpoint=CheckpointInfo(format=fmt, tensors=tensors,
                                                              quant_method=quant_method))


def test_gguf_checkpoint_counts_stored_bytes():
    """A GGUF file is counted as stored: token_embd 144 B + blk.0.attn_q 9,437,184 B + norm 16,384 B."""
    from memfit.core.spec import TensorInfo

    spec = _with_checkpoint("gguf", (
        TensorInfo(name="token_embd.weight", dtype="Q4_K", shape=(256,), nbytes=144),
        TensorInfo(name="blk.0.attn_q.weight", dtype="Q4_K", shape=(4096, 4096), nbytes=9_437_184),
        TensorInfo(name="blk.0.attn_norm.weight", dtype="F32", shape=(4096,), nbytes=16_384),
    ))
    term = weights(spec, dtype=DType.BF16, quant=quant("none"), runtime=Runtime.LLAMA_CPP)
    assert term.bytes_of("embeddings") == 144
    assert term.child("layers").bytes_of("attention") == 9_437_184
    assert term.nbytes == 144 + 9_437_184 + 16_384


def test_plain_safetensors_are_converted_to_the_compute_dtype():
    """A bf16 safetensors matrix of 4096² loaded in fp32 takes 16,777,216 × 4 = 67,108,864 B."""
    from memfit.core.spec import TensorInfo

    spec = _with_checkpoint("safetensors", (
        TensorInfo(name="model.layers.0.self_attn.q_proj.weight", dtype="BF16", shape=(4096, 4096),
                   nbytes=33_554_432),))
    assert weights(spec, dtype=DType.FP32, quant=quant("none"), runtime=TRANSFORMERS).nbytes == 67_108_864


def test_quantized_safetensors_are_counted_as_stored():
    """A GPTQ checkpoint keeps its packed int32 qweight bytes whatever the compute dtype."""
    from memfit.core.spec import TensorInfo

    spec = _with_checkpoint("safetensors", (
        TensorInfo(name="model.layers.0.self_attn.q_proj.qweight", dtype="I32", shape=(512, 4096),
                   nbytes=8_388_608),), quant_method="gptq")
    assert weights(spec, dtype=DType.FP16, quant=quant("none"), runtime=TRANSFORMERS).nbytes == 8_388_608


def test_every_catalog_model_bf16_weights_are_two_bytes_per_parameter():
    """bf16 weights minus the `buffers` child (rotary inv_freq, not a parameter) = 2 B × count_params."""
    from memfit.core.params import count_params
    from memfit.sources.catalog import catalog_models, load_catalog_model

    names = [entry["name"] for entry in catalog_models()]
    assert len(names) > 50
    for name in names:
        spec = load_catalog_model(name)
        assert spec is not None
        term = weights(spec, dtype=DType.BF16, quant=quant("none"), runtime=TRANSFORMERS)
        assert term.nbytes - term.bytes_of("buffers") == 2 * count_params(spec).num_params, name


def test_opt_350m_embeddings_are_embedding_dim_wide():
    """OPT-350m embeds at word_embed_proj_dim 512, not hidden 1024: 50,272 × 512 × 2 B = 51,478,528 B."""
    term = weights(load_model("opt-350m"), dtype=DType.BF16, quant=quant("none"), runtime=TRANSFORMERS)
    assert term.bytes_of("embeddings") == 50_272 * 512 * 2
    assert term.bytes_of("lm_head") == 0   # tied to the 512-wide embeddings


def test_falcon_mapper_marks_its_linears_as_skipped_by_bnb():
    """Falcon's mapper records its Linears as FalconLinear (bitsandbytes skips them); Llama's does not."""
    assert load_model("falcon-rw-1b").bnb_skips_layer_linears
    assert not load_model("Llama-3.2-1B").bnb_skips_layer_linears


def test_bnb_leaves_falcon_linear_subclass_in_compute_dtype():
    """FalconLinear subclasses nn.Linear, so nf4 converts nothing: q, k, v, o stay 4 × 4096² × 2 B."""
    spec = _square_spec()
    falcon = ModelSpec(name="sq-falcon", family="falcon", vocab_size=128, hidden_size=HIDDEN,
                       max_position_embeddings=4096, tie_word_embeddings=True, layers=spec.layers,
                       source=spec.source, bnb_skips_layer_linears=True)
    term = weights(falcon, dtype=DType.BF16, quant=quant("nf4"), runtime=TRANSFORMERS)
    # falcon layout fuses nothing here (fused_qkv False): q, k, v, o = 4 × 16,777,216 × 2 = 134,217,728 B
    assert term.child("layers").bytes_of("attention") == 4 * 16_777_216 * 2
    # while GGUF (not bnb) still quantizes the same matrices: Q8_0 is 34 B per 32 weights
    gguf = weights(falcon, dtype=DType.BF16, quant=quant("gguf-Q8_0"), runtime=TRANSFORMERS)
    assert gguf.child("layers").bytes_of("attention") == 4 * 16_777_216 * 34 // 32  # 71,303,168


def test_gpt_bigcode_causal_buffer_and_no_rotary():
    """starcoderbase-1b: bool tril(8,192²) = 67,108,864 B of buffers, no inv_freq; GPT-2 has no buffer."""
    spec = load_model("starcoderbase-1b")
    term = weights(spec, dtype=DType.BF16, quant=quant("none"), runtime=TRANSFORMERS)
    assert term.bytes_of("buffers") == 8192 * 8192
    gpt2 = weights(load_model("gpt2"), dtype=DType.BF16, quant=quant("none"), runtime=TRANSFORMERS)
    assert gpt2.bytes_of("buffers") == 0

"""GGUF → the equivalent HF config and exact per-tensor GGML bytes; tiny files written with GGUFWriter."""

import json
import sys
from pathlib import Path

import pytest
from tests.helpers import requires_gguf

from memfit.core.errors import ConfigError, MissingExtra, UnsupportedArchitecture
from memfit.sources.gguf import load_gguf, read_gguf
from memfit.sources.local import load_local

pytestmark = requires_gguf

TINY_CONFIG = Path(__file__).parent.parent / "data" / "fixtures" / "tiny-llama" / "config.json"
HIDDEN, FFN, LAYERS, HEADS, KV_HEADS, HEAD_DIM, VOCAB, CONTEXT = 64, 128, 2, 4, 2, 16, 100, 256
Q8_0_BLOCK_BYTES = 34
"""llama.cpp Q8_0: 32 int8 weights + one fp16 scale per block. Source: ggml-common.h block_q8_0."""


def write_gguf(
    path: Path, arch: str = "llama", *, extra: dict[str, int] | None = None, skip: tuple[str, ...] = ()
) -> Path:
    """Write a tiny GGUF like Tiny-Llama: F16 embeddings, a Q8_0 lm head and one Q8_0 projection."""
    gguf = pytest.importorskip("gguf")
    numpy = pytest.importorskip("numpy")
    writer = gguf.GGUFWriter(str(path), arch)
    keys = {
        "block_count": LAYERS,
        "embedding_length": HIDDEN,
        "feed_forward_length": FFN,
        "attention.head_count": HEADS,
        "attention.head_count_kv": KV_HEADS,
        "attention.key_length": HEAD_DIM,
        "context_length": CONTEXT,
        **(extra or {}),
    }
    for key, value in keys.items():
        if key not in skip:
            writer.add_uint32(f"{arch}.{key}", value)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0)
    writer.add_token_list([f"t{i}" for i in range(VOCAB)])
    q8_0 = gguf.GGMLQuantizationType.Q8_0
    writer.add_tensor("token_embd.weight", numpy.zeros((VOCAB, HIDDEN), dtype=numpy.float16))
    row_bytes = HIDDEN // 32 * Q8_0_BLOCK_BYTES
    writer.add_tensor("output.weight", numpy.zeros((VOCAB, row_bytes), dtype=numpy.uint8), raw_dtype=q8_0)
    writer.add_tensor(
        "blk.0.attn_q.weight", numpy.zeros((HIDDEN, row_bytes), dtype=numpy.uint8), raw_dtype=q8_0
    )
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_gguf_spec_equals_the_hf_config_spec(tmp_path: Path) -> None:
    """A llama GGUF maps to the same layers as Tiny-Llama's config.json."""
    spec = load_gguf(write_gguf(tmp_path / "tiny-q8_0.gguf"))
    reference = load_local(TINY_CONFIG)
    assert (spec.name, spec.family, spec.vocab_size, spec.tie_word_embeddings) == (
        "tiny-q8_0",
        "llama",
        100,
        False,
    )
    assert spec.layers == reference.layers


def test_gguf_checkpoint_has_ggml_types_and_exact_bytes(tmp_path: Path) -> None:
    """Tensors keep GGML type names and bytes; PyTorch-order shapes; file_type 7 is 'Q8_0'."""
    # token_embd F16 100·64·2 = 12,800 B; output Q8_0 100 rows · 2 blocks · 34 = 6,800 B;
    # attn_q Q8_0 64 · 2 · 34 = 4,352 B → 23,952 B
    checkpoint = load_gguf(write_gguf(tmp_path / "tiny.gguf")).checkpoint
    assert checkpoint is not None
    assert (checkpoint.format, checkpoint.file_type, checkpoint.total_bytes) == ("gguf", "Q8_0", 23_952)
    assert [(t.name, t.dtype, t.shape, t.nbytes) for t in checkpoint.tensors] == [
        ("token_embd.weight", "F16", (100, 64), 12_800),
        ("output.weight", "Q8_0", (100, 64), 6_800),
        ("blk.0.attn_q.weight", "Q8_0", (64, 64), 4_352),
    ]


def test_gguf_source_carries_the_equivalent_config(tmp_path: Path) -> None:
    """ModelSource(kind='gguf') holds the rebuilt config.json: 4 heads, 2 KV heads, fp16 compute."""
    spec = load_gguf(write_gguf(tmp_path / "tiny.gguf"))
    config = json.loads(spec.source.config_json)
    assert spec.source.kind == "gguf"
    assert (config["num_attention_heads"], config["num_key_value_heads"], config["torch_dtype"]) == (
        4,
        2,
        "float16",
    )


def test_llama_with_experts_is_mixtral(tmp_path: Path) -> None:
    """llama.cpp stores Mixtral as llama with expert_count: the config says mixtral, 8 experts, top 2."""
    config, _ = read_gguf(
        write_gguf(tmp_path / "moe.gguf", extra={"expert_count": 8, "expert_used_count": 2})
    )
    assert (config["model_type"], config["num_local_experts"], config["num_experts_per_tok"]) == (
        "mixtral",
        8,
        2,
    )


def test_qwen3moe_maps_expert_sizes(tmp_path: Path) -> None:
    """A qwen3moe GGUF gives qwen3_moe with num_experts, top-k and moe_intermediate_size."""
    extra = {"expert_count": 16, "expert_used_count": 4, "expert_feed_forward_length": 32}
    config, _ = read_gguf(write_gguf(tmp_path / "q3moe.gguf", "qwen3moe", extra=extra))
    assert (
        config["model_type"],
        config["num_experts"],
        config["num_experts_per_tok"],
        config["moe_intermediate_size"],
    ) == ("qwen3_moe", 16, 4, 32)


def test_deepseek2_absorbed_mla_dims(tmp_path: Path) -> None:
    """DeepSeek-V3 GGUF (absorbed MLA, sigmoid gating): qk_nope = 192 − 64, v = 128 from the *_mla keys."""
    extra = {
        "attention.key_length_mla": 192,
        "attention.value_length_mla": 128,
        "attention.value_length": 512,
        "rope.dimension_count": 64,
        "attention.kv_lora_rank": 512,
        "attention.q_lora_rank": 1536,
        "expert_count": 256,
        "expert_used_count": 8,
        "expert_feed_forward_length": 2048,
        "expert_shared_count": 1,
        "leading_dense_block_count": 3,
        "expert_gating_func": 2,
    }
    config, _ = read_gguf(write_gguf(tmp_path / "ds.gguf", "deepseek2", extra=extra))
    assert (
        config["model_type"],
        config["qk_nope_head_dim"],
        config["qk_rope_head_dim"],
        config["v_head_dim"],
        config["first_k_dense_replace"],
    ) == ("deepseek_v3", 128, 64, 128, 3)


def test_truncated_gguf_is_config_error(tmp_path: Path) -> None:
    """A GGUF cut 100 bytes short is a one-line ConfigError saying it is truncated or corrupt."""
    path = write_gguf(tmp_path / "tiny.gguf")
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(ConfigError, match=r"not a readable GGUF file, truncated or corrupt") as info:
        load_gguf(path)
    assert "\n" not in str(info.value)


def test_garbage_gguf_is_config_error(tmp_path: Path) -> None:
    """A file that is not GGUF at all is a one-line ConfigError."""
    path = tmp_path / "junk.gguf"
    path.write_bytes(b"not a gguf file at all")
    with pytest.raises(ConfigError, match=r"truncated or corrupt") as info:
        load_local(path)
    assert "\n" not in str(info.value)


def test_missing_dimension_is_config_error(tmp_path: Path) -> None:
    """A GGUF without llama.block_count is a ConfigError naming that key."""
    path = write_gguf(tmp_path / "tiny.gguf", skip=("block_count",))
    with pytest.raises(ConfigError, match=r"lacks llama.block_count"):
        load_gguf(path)


def test_unknown_architecture(tmp_path: Path) -> None:
    """A GGUF architecture with no HF mapping (mamba) is UnsupportedArchitecture listing supported ones."""
    path = write_gguf(tmp_path / "m.gguf", "mamba")
    with pytest.raises(UnsupportedArchitecture, match=r"'mamba' has no mapping .*supported: .*llama"):
        load_gguf(path)


def test_without_gguf_package_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the gguf package, a .gguf path is MissingExtra naming pip install 'memfit[gguf]'."""
    path = write_gguf(tmp_path / "tiny.gguf")
    monkeypatch.setitem(sys.modules, "gguf", None)
    with pytest.raises(MissingExtra, match=r"pip install 'memfit\[gguf\]'"):
        load_local(path)


def test_llama_3_1_8b_q4_k_m_gguf_matches_the_catalog(tmp_path: Path) -> None:
    """Llama-3.1-8B's llama.cpp metadata maps to the catalog spec's layers, vocab and untied head."""
    # Tensor data is a sparse hole (no disk used): token_embd Q4_K 128,256·4,096/256 blocks · 144 B
    # = 295,501,824 B; output Q6_K · 210 B = 430,940,160 B. Source of the keys: llama.cpp convert_hf_to_gguf.
    gguf = pytest.importorskip("gguf")
    numpy = pytest.importorskip("numpy")
    from memfit.sources.catalog import load_catalog_model

    path = tmp_path / "Llama-3.1-8B-Q4_K_M.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    dims = {
        "block_count": 32,
        "context_length": 131_072,
        "embedding_length": 4096,
        "feed_forward_length": 14_336,
        "attention.head_count": 32,
        "attention.head_count_kv": 8,
        "vocab_size": 128_256,
        "rope.dimension_count": 128,
    }
    for key, value in dims.items():
        writer.add_uint32(f"llama.{key}", value)
    writer.add_float32("llama.rope.freq_base", 500_000.0)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_Q4_K_M)
    row_bytes = {
        "token_embd.weight": (gguf.GGMLQuantizationType.Q4_K, 4096 // 256 * 144),
        "output.weight": (gguf.GGMLQuantizationType.Q6_K, 4096 // 256 * 210),
    }
    for name, (ggml_type, nbytes) in row_bytes.items():
        writer.add_tensor_info(
            name, [128_256, nbytes], numpy.dtype(numpy.uint8), 128_256 * nbytes, raw_dtype=ggml_type
        )
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    writer.close()
    data_start = -(-path.stat().st_size // 32) * 32  # GGUF data is aligned to general.alignment = 32 B
    with path.open("r+b") as file:
        file.truncate(data_start + 128_256 * (2304 + 3360))
    spec = load_gguf(path)
    reference = load_catalog_model("Llama-3.1-8B")
    assert reference is not None
    assert spec.layers == reference.layers
    assert (spec.vocab_size, spec.tie_word_embeddings, spec.max_position_embeddings) == (
        128_256,
        False,
        131_072,
    )
    assert spec.checkpoint is not None
    assert (spec.checkpoint.file_type, spec.checkpoint.total_bytes) == ("Q4_K_M", 726_441_984)


def test_split_gguf_reads_every_shard(tmp_path: Path) -> None:
    """A GGUF split into two shards (one tensor each) gives both tensors, from either shard's path."""
    # a: F16 4·32·2 = 256 B; b: F32 4·32·4 = 512 B → 768 B
    gguf = pytest.importorskip("gguf")
    numpy = pytest.importorskip("numpy")
    writer = gguf.GGUFWriter(str(tmp_path / "m.gguf"), "llama", split_max_tensors=1)
    for key, value in {
        "block_count": LAYERS,
        "embedding_length": HIDDEN,
        "feed_forward_length": FFN,
        "attention.head_count": HEADS,
        "context_length": CONTEXT,
        "vocab_size": VOCAB,
    }.items():
        writer.add_uint32(f"llama.{key}", value)
    writer.add_tensor("a", numpy.zeros((4, 32), dtype=numpy.float16))
    writer.add_tensor("b", numpy.zeros((4, 32), dtype=numpy.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    for shard in ("m-00001-of-00002.gguf", "m-00002-of-00002.gguf"):
        spec = load_gguf(tmp_path / shard)
        assert spec.checkpoint is not None
        assert (spec.name, [t.name for t in spec.checkpoint.tensors], spec.checkpoint.total_bytes) == (
            "m",
            ["a", "b"],
            768,
        )
    (tmp_path / "m-00002-of-00002.gguf").unlink()
    with pytest.raises(ConfigError, match=r"shard m-00002-of-00002.gguf is missing"):
        load_gguf(tmp_path / "m-00001-of-00002.gguf")


MLA_KEYS = {
    "attention.key_length_mla": 24,
    "attention.value_length_mla": 16,
    "rope.dimension_count": 8,
    "attention.kv_lora_rank": 32,
    "attention.q_lora_rank": 48,
    "expert_count": 8,
    "expert_used_count": 2,
    "expert_feed_forward_length": 32,
    "expert_shared_count": 1,
    "leading_dense_block_count": 1,
    "expert_gating_func": 2,
}
ARCHITECTURES = [
    ("llama", {}, "llama", "MlpSpec"),
    ("qwen2", {}, "qwen2", "MlpSpec"),
    ("qwen3", {}, "qwen3", "MlpSpec"),
    (
        "qwen2moe",
        {
            "expert_count": 8,
            "expert_used_count": 2,
            "expert_feed_forward_length": 32,
            "expert_shared_feed_forward_length": 64,
        },
        "qwen2_moe",
        "MoeSpec",
    ),
    (
        "qwen3moe",
        {"expert_count": 8, "expert_used_count": 2, "expert_feed_forward_length": 32},
        "qwen3_moe",
        "MoeSpec",
    ),
    ("gemma", {}, "gemma", "MlpSpec"),
    ("gemma2", {"attention.sliding_window": 64}, "gemma2", "MlpSpec"),
    ("gemma3", {"attention.sliding_window": 64}, "gemma3_text", "MlpSpec"),
    ("phi3", {}, "phi3", "MlpSpec"),
    ("olmo2", {}, "olmo2", "MlpSpec"),
    ("deepseek2", MLA_KEYS, "deepseek_v3", "MoeSpec"),
    ("gpt2", {}, "gpt2", "MlpSpec"),
]


@pytest.mark.parametrize(
    ("arch", "extra", "family", "mlp_kind"), ARCHITECTURES, ids=[a[0] for a in ARCHITECTURES]
)
def test_every_gguf_architecture_reaches_its_family(
    tmp_path: Path, arch: str, extra: dict[str, int], family: str, mlp_kind: str
) -> None:
    """Each mapped GGUF architecture gives a config its family module accepts: 2 layers, right MLP kind."""
    spec = load_gguf(write_gguf(tmp_path / f"{arch}.gguf", arch, extra=extra))
    assert (spec.family, spec.num_layers, type(spec.layers[-1].mlp).__name__) == (family, 2, mlp_kind)

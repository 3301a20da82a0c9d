"""Family attention facts (core/attention_kinds.py): eager fallbacks, ALiBi bias, bytes per eager score."""

from memfit.api import load_model
from memfit.core.attention_kinds import alibi_bias, eager_bytes_per_score, runs_eager
from memfit.core.choices import AttnImpl
from memfit.core.dtypes import DType
from memfit.core.transients import Step, layer_peak
from memfit.core.workload import Inference


def test_bloom_and_gpt_oss_never_run_sdpa():
    """BLOOM and gpt-oss set _supports_sdpa = False: SDPA asked, eager runs; Llama keeps SDPA."""
    assert runs_eager(load_model("bloom-560m"), AttnImpl.SDPA)
    assert runs_eager(load_model("gpt-oss-20b"), AttnImpl.SDPA)
    assert not runs_eager(load_model("Llama-3.2-1B"), AttnImpl.SDPA)


def _scores(name: str, dtype: DType) -> int:
    spec = load_model(name)
    att = spec.layers[0].attention
    return eager_bytes_per_score(att, dtype, previous_probs=spec.keeps_previous_attn_probs)


def test_eager_bytes_per_score_by_family():
    """bf16: BLOOM 3·2 + 4 + 4 = 14, Falcon-RW 2 + 4 + 2 + 2·4 + 2·2 = 20, gpt-oss 3·2 = 6, Llama 10."""
    assert _scores("bloom-560m", DType.BF16) == 14
    assert _scores("falcon-rw-1b", DType.BF16) == 20
    assert _scores("gpt-oss-20b", DType.BF16) == 6
    assert _scores("Llama-3.2-1B", DType.BF16) == 10
    # fp32: BLOOM's and Falcon's dtype casts vanish: 4 × 4 = 16 and 5 × 4 = 20
    assert _scores("bloom-560m", DType.FP32) == 16
    assert _scores("falcon-rw-1b", DType.FP32) == 20
    # Falcon without ALiBi (falcon-7b): q·kᵀ, + mask, softmax in bf16 and the previous probabilities: 4 × 2
    assert _scores("falcon-7b", DType.BF16) == 8


def test_falcon_rw_sdpa_holds_the_alibi_bias():
    """falcon-rw-1b (alibi) b1 s1024 under SDPA: a (1, 32, 1024, 1024) bf16 bias = 67,108,864 B."""
    spec = load_model("falcon-rw-1b")
    assert alibi_bias(spec)
    acts, _ = layer_peak(spec, Inference(prompt_tokens=1024), Step(query_tokens=1024, kv_tokens=1024,
                                                                   masked=False))
    assert acts.flat()["hidden/alibi_bias"] == 32 * 1024 * 1024 * 2


def test_bloom_sdpa_request_gets_eager_scores():
    """bloom-560m b8 s992 asked for SDPA: eager scores 8 × 16 × 992² × 14 B = 1,763,442,688 B."""
    spec = load_model("bloom-560m")
    wl = Inference(prompt_tokens=992, batch_size=8, dtype=DType.BF16)
    acts, _ = layer_peak(spec, wl, Step(query_tokens=992, kv_tokens=992, masked=False))
    assert acts.flat()["attention/scores"] == 8 * 16 * 992 * 992 * 14

"""FLOPs per token against a hand count, the peak-FLOP/s sources, the phase clock and the
throughput summary of a run (issue 14 item 2)."""

from __future__ import annotations

import pytest
import torch

from uaclm_dist.train.flops import (
    AttentionShape,
    MatmulParameters,
    attention_shape,
    flops_per_token,
    matmul_parameters,
    sequence_flops,
)
from uaclm_dist.train.peak_flops import gemm_probe, peak_flops, table_tflops
from uaclm_dist.train.step_timing import PHASES, PhaseClock
from uaclm_dist.train.throughput import throughput_summary


def _tiny_llama(vocab: int = 1000):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=vocab, hidden_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, intermediate_size=128,
                         tie_word_embeddings=False)  # fmt: skip
    torch.manual_seed(0)
    return LlamaForCausalLM(config)


# Hand count of that model: d_head = 64 / 4 = 16, k/v project to 2 heads x 16 = 32.
#   per layer: q 64*64 + k 64*32 + v 64*32 + o 64*64 + gate/up 64*128 (x2) + down 128*64
PER_LAYER = 64 * 64 + 64 * 32 + 64 * 32 + 64 * 64 + 3 * 64 * 128  # 36,864
HEAD = 1000 * 64
#   LoRA rank 8 on q (A 64x8, B 8x64) and v (A 64x8, B 8x32), 2 layers
LORA = 2 * (64 * 8 + 8 * 64 + 64 * 8 + 8 * 32)  # 3,584


def test_matmul_parameters_and_flops_per_token_match_a_hand_count():
    from peft import LoraConfig, get_peft_model

    model = _tiny_llama()
    model.requires_grad_(False)
    assert matmul_parameters(model) == MatmulParameters(frozen=2 * PER_LAYER + HEAD, trainable=0)
    peft = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj",
                                                                                "v_proj"]))
    params = matmul_parameters(peft)
    assert params == MatmulParameters(frozen=2 * PER_LAYER + HEAD, trainable=LORA)
    shape = attention_shape(peft.config)
    assert shape == AttentionShape(layers=2, heads=4, head_dim=16)
    # 4 N_frozen + 6 N_trainable + 12 L H d_head T at T = 10
    expected = 4 * (2 * 36_864 + 64_000) + 6 * 3_584 + 12 * 2 * 4 * 16 * 10
    assert expected == 587_776
    assert flops_per_token(params, shape, 10) == expected
    # a batch of sequences of lengths 10 and 3: each token at its own sequence's length
    assert sequence_flops(params, shape, [10, 3]) == 10 * expected + 3 * flops_per_token(
        params, shape, 3)
    # HF's 6 N (all weights, as if trained) overstates a LoRA step's work
    six_n = 6 * (params.frozen + params.trainable)
    assert six_n / (4 * params.frozen + 6 * params.trainable) > 1.45


def test_a_removed_head_is_counted_from_its_shape_and_4bit_layers_unpacked():
    import bitsandbytes as bnb

    model = _tiny_llama()
    model.requires_grad_(False)
    model.lm_head = torch.nn.Identity()
    assert matmul_parameters(model, (1000, 64)).frozen == 2 * PER_LAYER + HEAD
    assert matmul_parameters(model, (1000, 64), head_trainable=True).trainable == HEAD
    layer = bnb.nn.Linear4bit(64, 32, quant_type="nf4")
    layer.requires_grad_(False)
    assert matmul_parameters(torch.nn.Sequential(layer)).frozen == 64 * 32
    tower = torch.nn.Module()
    tower.vision_tower = torch.nn.Linear(8, 8)
    tower.language = torch.nn.Linear(8, 4)
    assert matmul_parameters(tower) == MatmulParameters(frozen=0, trainable=32)


def test_attention_shape_of_a_vision_language_config_and_explicit_head_dim():
    from types import SimpleNamespace

    text = SimpleNamespace(num_attention_heads=8, hidden_size=256, num_hidden_layers=3,
                           head_dim=64)  # fmt: skip
    assert attention_shape(SimpleNamespace(text_config=text)) == AttentionShape(3, 8, 64)


@pytest.mark.parametrize("name, tflops", [
    ("NVIDIA H100 80GB HBM3", 989.4), ("NVIDIA H100 PCIe", 756.0), ("NVIDIA H100 NVL", 835.5),
    ("NVIDIA H200", 989.4), ("NVIDIA A100-SXM4-80GB", 312.0), ("NVIDIA L40S", 362.05),
    ("NVIDIA L4", 121.0), ("NVIDIA A10", 125.0), ("NVIDIA GeForce RTX 3090", None),
])  # fmt: skip
def test_gpu_peak_table(name, tflops):
    assert table_tflops(name) == tflops


def test_peak_flops_from_config_or_a_cpu_gemm_probe():
    cpu = torch.device("cpu")
    assert peak_flops(cpu, torch.float32, 2.5).flops_per_s == 2.5e12
    probed = peak_flops(cpu, torch.float32)
    assert probed.source.startswith("GEMM probe: CPU, float32") or "bfloat16" not in probed.source
    # a real measurement: above 0.1 GFLOP/s and below 10 TFLOP/s on any CPU this runs on
    assert 1e8 < probed.flops_per_s < 1e13
    assert gemm_probe(cpu, torch.float32, size=64, repeats=2) > 0


def test_phase_clock_accumulates_and_resets():
    ticks = iter([0.0, 1.0, 1.0, 3.5, 4.0, 4.25])
    synced = []
    clock = PhaseClock(lambda: synced.append(1), clock=lambda: next(ticks))
    with clock.phase("forward"):
        pass
    with clock.phase("backward"):
        pass
    with clock.phase("forward"):
        pass
    seconds = clock.take()
    assert seconds["forward"] == 1.25 and seconds["backward"] == 2.5 and len(synced) == 6
    assert set(seconds) == set(PHASES) and all(v == 0 for v in clock.take().values())
    with pytest.raises(KeyError, match="unknown phase"):
        with clock.phase("nap"):
            pass


def _row(step, tokens, flops, seconds, peaks):
    return {"step": step, "cum_tokens": tokens, "cum_flops": flops, "cum_seconds": seconds,
            **{f"cum_{p}_s": seconds / len(PHASES) / 2 for p in PHASES},
            "peak_memory_mb_per_worker": peaks}  # fmt: skip


SETUP = {"world_size": 2, "peak_flops_per_device": 1e9, "peak_flops_source": "test",
         "parameters": {"total": 10, "trainable": 2}, "device": "cpu"}  # fmt: skip


def test_throughput_summary_leaves_the_first_logged_interval_out():
    rows = [_row(10, 1000, 4e9, 5.0, [100, 120]), _row(20, 3000, 12e9, 9.0, [110, 115])]
    out = throughput_summary(rows, SETUP)
    assert out["steps"] == [10, 20] and not out["includes_warmup"]
    assert out["tokens_per_s"] == pytest.approx(2000 / 4.0)
    assert out["tokens_per_s_per_worker"] == pytest.approx(250.0)
    assert out["step_seconds"] == pytest.approx(0.4)
    assert out["flops_per_token"] == pytest.approx(4e6)
    assert out["mfu"] == pytest.approx(8e9 / (4.0 * 1e9 * 2))
    assert out["peak_memory_mb_per_worker"] == [110, 120] and out["peak_memory_mb_max"] == 120
    phases = out["phase_seconds"]
    assert sum(phases.values()) == pytest.approx(0.4) and phases["other"] == pytest.approx(0.2)


def test_throughput_summary_with_one_logged_row_or_none():
    out = throughput_summary([_row(8, 800, 1e9, 2.0, [50])], SETUP)
    assert out["includes_warmup"] and out["steps"] == [0, 8]
    assert out["tokens_per_s"] == pytest.approx(400.0)
    assert throughput_summary([], SETUP) is None
    assert throughput_summary([_row(8, 800, 1e9, 2.0, [50])], None) is None


def test_throughput_summary_across_a_resume_on_another_world_size():
    # steps 10 -> 20 on 2 workers (peak 1e9 each), then 20 -> 30 on 4 workers: 4 s each half
    rows = [_row(10, 1000, 4e9, 5.0, [100, 100]), _row(30, 5000, 20e9, 13.0, [110] * 4)]
    rows[0].update(cum_worker_seconds=10.0, cum_peak_flop=10e9)
    rows[1].update(cum_worker_seconds=10.0 + 2 * 4.0 + 4 * 4.0, cum_peak_flop=10e9 + 24e9)
    out = throughput_summary(rows, {**SETUP, "world_size": 4})  # compute.json of the resume
    assert out["tokens_per_s_per_worker"] == pytest.approx(4000 / 24.0)
    assert out["mfu"] == pytest.approx(16e9 / 24e9)

"""The analytic GPU model on hand-computed cases: tile and wave steps, roofline, monotonicity."""
import math

import pytest

from hwprune.hardware.analytic import GPU_SPECS, GpuSpec, conv_time, gemm_time, memory_time

# 4 SMs at 1 TFLOP/s fp16 -> 0.25e12 per SM; 1 GB/s is so slow that memory dominates when asked
TOY = GpuSpec("toy", sms=4, clock_mhz=1000, fp16_tflops=1.0, int8_tops=2.0, bandwidth_gbs=1e6,
              launch_us=0.0, source="test")
TILE = ((64, 64, 32),)
ONE_TILE_S = 2 * 64 * 64 * 32 / 0.25e12  # one 64x64 tile over K = 32 on one SM


def test_one_tile_hand_computed():
    est = gemm_time(64, 64, 32, TOY, tiles=TILE)
    assert est.waves == 1 and est.compute_s == pytest.approx(ONE_TILE_S)
    assert est.seconds == pytest.approx(ONE_TILE_S)


@pytest.mark.parametrize("m, n, k, waves, k_steps", [
    (1, 1, 1, 1, 1),        # padding up to one tile
    (64, 64, 33, 1, 2),     # K steps of 32: 33 costs two steps
    (256, 64, 32, 1, 1),    # 4 tiles fill the 4 SMs: still one wave
    (257, 64, 32, 2, 1),    # a fifth tile needs a second wave
    (128, 192, 64, 2, 2),   # 2 x 3 = 6 tiles -> 2 waves, K = 2 steps
])
def test_tile_and_wave_quantization(m, n, k, waves, k_steps):
    est = gemm_time(m, n, k, TOY, tiles=TILE)
    assert est.waves == waves
    assert est.compute_s == pytest.approx(waves * k_steps * ONE_TILE_S)


def test_step_at_the_tile_edge_and_flat_inside():
    t = [gemm_time(4 * 64, n, 32, TOY, tiles=TILE).seconds for n in (1, 32, 64, 65, 128)]
    assert t[0] == t[1] == t[2] < t[3] == t[4]


def test_roofline_memory_bound():
    slow = GpuSpec("slow", 4, 1000, 1.0, 2.0, bandwidth_gbs=1.0, launch_us=0.0, source="test")
    est = gemm_time(64, 64, 32, slow, tiles=TILE)
    moved = 2 * (64 * 32 + 32 * 64 + 64 * 64)
    assert est.memory_s == pytest.approx(moved / 1e9) and est.seconds == pytest.approx(est.memory_s)


def test_launch_cost_is_added_once():
    spec = GpuSpec("l", 4, 1000, 1.0, 2.0, 1e6, launch_us=5.0, source="test")
    assert gemm_time(64, 64, 32, spec, tiles=TILE).seconds == pytest.approx(ONE_TILE_S + 5e-6)
    assert memory_time(1e9, spec) == pytest.approx(1e9 / 1e15 + 5e-6)


def test_conv_is_an_implicit_gemm():
    # 1x16x8x8 input, 3x3 conv to 64 channels, same padding: M = 64, N = 64, K = 16*9 = 144 -> 5 K steps
    est = conv_time((1, 16, 8, 8), (64, 16, 3, 3), (1, 64, 8, 8), 1, TOY, tiles=TILE)
    assert est.compute_s == pytest.approx(5 * ONE_TILE_S)


def test_int8_uses_its_own_rate():
    est = gemm_time(64, 64, 64, TOY, "int8", tiles=((64, 64, 64),))
    assert est.compute_s == pytest.approx(2 * 64 * 64 * 64 / 0.5e12)


@pytest.mark.parametrize("spec", sorted(GPU_SPECS))
def test_more_channels_never_predict_faster(spec):
    s = GPU_SPECS[spec]
    for precision in ("fp16", "int8"):
        out = [conv_time((1, 64, 28, 28), (c, 64, 3, 3), (1, c, 28, 28), 1, s, precision).seconds
               for c in range(1, 300, 7)]
        inp = [conv_time((1, c, 28, 28), (64, c, 3, 3), (1, 64, 28, 28), 1, s, precision).seconds
               for c in range(1, 300, 7)]
        assert out == sorted(out) and inp == sorted(inp)


def test_orin_nano_is_a_staircase_in_c_out():
    s = GPU_SPECS["orin-nano-8gb"]
    t = {c: conv_time((1, 64, 56, 56), (c, 64, 3, 3), (1, c, 56, 56), 1, s).seconds for c in (64, 65, 96)}
    assert t[65] > t[64] and t[65] == t[96] and not math.isclose(t[64], t[65])

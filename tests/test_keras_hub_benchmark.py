"""keras_trips.utils.keras_hub_benchmark: FLOPs by hand, a tiny timed run."""

import pytest

from keras_trips.models import with_patch_selection
from keras_trips.utils import keras_hub_benchmark

# Tiny SigLIP: 32 px, patch 8 -> N = 16 patches, width D = 32, MLP M = 128,
# 2 blocks, no [CLS]; 2 x multiply-adds.
PATCHES = 2 * 16 * (8 * 8 * 3) * 32  # 196_608
# Keep 1.0: 16 tokens through both blocks, then the pooling head's 1 query.
#   block: q, k, v, o 4 * 2 * 16 * 32 * 32 = 131_072; scores and weighted sum
#   2 * 2 * 16 * 16 * 32 = 32_768; MLP 2 * 2 * 16 * 32 * 128 = 262_144.
#   head: q, o on 1 token 4_096, k, v on 16 65_536, scores 2_048, MLP 16_384.
KEEP_1 = PATCHES + 2 * (131_072 + 32_768 + 262_144) + (4_096 + 65_536 + 2_048 + 16_384)
# Keep 0.5 at both blocks: 16 -> 8 kept + 1 fused = 9 -> 5 kept + 1 fused = 6.
#   block 0: attention 163_840; selection 2 * 2 * 16 * 32 = 2_048 (scores and
#   fused token) + 2 * 32 * 32 = 2_048 (text query); MLP on 9: 147_456.
#   block 1: attention on 9: 73_728 + 10_368; selection 1_152 + 2_048; MLP
#   on 6: 98_304. head over 6 keys: 4_096 + 24_576 + 768 + 16_384.
KEEP_HALF = (
    PATCHES
    + (163_840 + 2_048 + 2_048 + 147_456)
    + (73_728 + 10_368 + 1_152 + 2_048 + 98_304)
    + (4_096 + 24_576 + 768 + 16_384)
)


def test_flops_agree_with_the_hand_count():
    encoder = keras_hub_benchmark.build_encoder("siglip", 32, tiny=True)
    selecting = with_patch_selection(encoder, (0, 1), 0.5)
    assert selecting.sequence_lengths() == [16, 9, 6]
    assert keras_hub_benchmark.selecting_encoder_flops(selecting, 1.0) == KEEP_1
    assert keras_hub_benchmark.selecting_encoder_flops(selecting) == KEEP_HALF
    assert KEEP_1 == 1_136_640 and KEEP_HALF == 743_424


def test_a_tiny_run_reports_every_config():
    results = keras_hub_benchmark.benchmark_keras_hub_encoders(
        encoders=("siglip",),
        image_size=32,
        batch_size=2,
        steps=1,
        warmup=0,
        selection_layers=(0, 1),
        keep_rates=(1.0, 0.5),
        jit_compile=False,
        tiny=True,
    )
    configs = results["siglip"]["configs"]
    assert list(configs) == ["original", "keep1.0", "keep0.5"]
    assert configs["keep0.5"]["predicted_speedup"] == pytest.approx(KEEP_1 / KEEP_HALF)
    assert configs["keep0.5"]["sequence_lengths"] == [16, 9, 6]
    for entry in configs.values():
        assert entry["forward"]["median_ms"] > 0
    table = keras_hub_benchmark.format_keras_hub_table(results)
    assert "siglip   keep0.5" in table and "load average" in table

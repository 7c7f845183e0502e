"""tools/benchmark.py: a tiny run on the current backend, FLOPs by hand."""

import importlib.util
import itertools
import json
import os

import pytest

# Tiny config: 32 px, patch 8 -> N = 16 patches, 2 blocks, width D = 32,
# MLP M = 64, 3 channels, selection after the attention of blocks 0 and 1.
N, P, C, D, M = 16, 8, 3, 32, 64
PATCH_EMBEDDING = 2 * N * (P * P * C) * D  # one (P*P*C) x D matmul per patch


def block_flops(length_in, length_out, text_guided=True):
    """One pre-LN block, written out term by term (2 x multiply-adds)."""
    flops = 4 * (2 * length_in * D * D)  # query, key, value, output projections
    flops += 2 * (2 * length_in * length_in * D)  # q.k scores, weighted sum of v
    if length_out != length_in:
        flops += 2 * (length_in - 1) * D  # text query . keys of the N tokens
        flops += 2 * (length_in - 1) * D  # fused token: sum_i a_i x_i
        flops += 2 * D * D * text_guided  # text [CLS] query projection
    flops += 2 * (2 * length_out * D * M)  # the MLP's two matmuls
    return flops


# Token counts with [CLS]: k = ceil(rate * n) kept plus 1 fused token.
LENGTHS = {
    "none": [17, 17, 17],
    "keep0.7": [17, 1 + 12 + 1, 1 + 10 + 1],  # 16 -> 12 (+1); 13 -> 10 (+1)
    "keep0.5": [17, 1 + 8 + 1, 1 + 5 + 1],  # 16 -> 8 (+1); 9 -> 5 (+1)
    "keras_hub": [17, 17, 17],
}
# The same totals as plain numbers, worked out on paper.
EXPECTED_FLOPS = {
    "none": 196_608 + 2 * 315_520,
    "keep0.7": 196_608 + 295_040 + 241_792,
    "keep0.5": 196_608 + 262_272 + 155_264,
    "keras_hub": 196_608 + 2 * 315_520,
}


def load_cli():
    path = os.path.join(os.path.dirname(__file__), "..", "tools", "benchmark.py")
    spec = importlib.util.spec_from_file_location("benchmark_cli", path)
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    return cli


def test_hand_written_flops_agree_with_the_paper_arithmetic():
    for name, lengths in LENGTHS.items():
        total = PATCH_EMBEDDING + sum(
            block_flops(a, b) for a, b in itertools.pairwise(lengths)
        )
        assert total == EXPECTED_FLOPS[name], name


def run_cli(tmp_path_factory, *flags):
    output = str(tmp_path_factory.mktemp("benchmark") / "vision.json")
    load_cli().main(
        ["--tiny", "--steps", "1", "--warmup", "0", *flags, "--output", output]
    )
    with open(output) as f:
        return json.load(f)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    # Forward only: compiling four train steps takes a minute on a small CPU.
    return run_cli(tmp_path_factory, "--skip-train")


def check_timings(results, modes):
    for name, result in results.items():
        for mode in modes:
            entry = result[mode]
            assert entry["median_ms"] > 0, (name, mode)
            assert entry["images_per_s"] > 0, (name, mode)
            assert entry["compile_s"] > 0, (name, mode)
            assert len(entry["times_ms"]) == 1
            if name == "keras_hub":
                assert entry["ours_over_keras_hub"] > 0
            else:
                assert entry["measured_speedup"] > 0
                assert entry["measured_over_predicted"] == pytest.approx(
                    entry["measured_speedup"] / result["predicted_speedup"]
                )


def test_every_configuration_is_timed(report):
    results = report["results"]
    assert set(results) == {"none", "keep0.7", "keep0.5", "keras_hub"}
    check_timings(results, ["forward"])
    assert "train" not in results["none"]


@pytest.mark.slow
def test_train_steps_are_timed(tmp_path_factory):
    report = run_cli(tmp_path_factory, "--configs", "keep0.5")
    results = report["results"]
    assert set(results) == {"none", "keep0.5"}  # the reference always runs
    check_timings(results, ["forward", "train"])


def test_flops_and_predicted_speedups_match_hand_computed_values(report):
    results = report["results"]
    for name, expected in EXPECTED_FLOPS.items():
        assert results[name]["flops_per_image"] == expected, name
        assert results[name]["sequence_lengths"] == LENGTHS[name], name
        assert results[name]["predicted_speedup"] == pytest.approx(
            EXPECTED_FLOPS["none"] / expected, rel=1e-12
        )
    assert results["keep0.7"]["predicted_speedup"] == pytest.approx(827_648 / 733_440)
    assert results["keep0.5"]["predicted_speedup"] == pytest.approx(827_648 / 614_144)
    assert report["backend"] in ("jax", "tensorflow", "torch")

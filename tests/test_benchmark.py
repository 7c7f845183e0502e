"""tools/benchmark.py: a tiny run on the current backend, FLOPs by hand."""

import argparse
import importlib.util
import itertools
import json
import os

import keras
import pytest
from backend_utils import end_to_end

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
    output = str(tmp_path_factory.mktemp("benchmark") / "report.json")
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


@end_to_end
def test_every_configuration_is_timed(report):
    results = report["results"]
    assert set(results) == {"none", "keep0.7", "keep0.5", "keras_hub"}
    check_timings(results, ["forward"])
    assert "train" not in results["none"]


@end_to_end
@pytest.mark.slow
def test_train_steps_are_timed(tmp_path_factory):
    report = run_cli(tmp_path_factory, "--configs", "keep0.5")
    results = report["results"]
    assert set(results) == {"none", "keep0.5"}  # the reference always runs
    check_timings(results, ["forward", "train"])


@end_to_end
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


@pytest.mark.skipif(keras.backend.backend() != "torch", reason="torch models")
def test_torch_task_times_ours_beside_the_plain_pytorch_vit(tmp_path_factory):
    report = run_cli(tmp_path_factory, "--task", "torch")
    # Same weights, same function: the outputs were compared before timing.
    assert report["max_abs_difference_from_reference"] <= 1e-4
    results = report["results"]
    assert set(results) == {"pytorch", "none", "keep0.7", "keep0.5"}
    for name, result in results.items():
        expected = EXPECTED_FLOPS["none" if name == "pytorch" else name]
        assert result["gflops_per_image"] * 1e9 == pytest.approx(expected, rel=1e-12)
        assert result["predicted_speedup"] == pytest.approx(
            EXPECTED_FLOPS["none"] / expected, rel=1e-12
        )
        for mode in ("inference", "train"):
            entry = result[mode]
            assert entry["median_ms"] > 0 and len(entry["times_ms"]) == 1
            assert entry["time_over_reference"] == pytest.approx(
                1.0 / entry["measured_speedup"]
            )
            assert entry["median_page_faults"] >= 0
    assert results["pytorch"]["inference"]["time_over_reference"] == 1.0


@pytest.mark.skipif(keras.backend.backend() != "torch", reason="torch models")
def test_a_torch_model_process_that_stops_is_named():
    cli = load_cli()
    benchmark_torch = cli.load_torch_benchmark()
    args = argparse.Namespace(
        image_size=32, batch_size=2, selection_layers=(0, 1), skip_train=True
    )
    with (
        pytest.raises(RuntimeError, match="process running 'no model' stopped"),
        benchmark_torch.model_processes(args, cli.TINY, ["none", "no model"]),
    ):
        pass


@pytest.mark.skipif(keras.backend.backend() == "torch", reason="other backends")
def test_torch_task_needs_the_torch_backend():
    with pytest.raises(SystemExit):
        load_cli().parse_args(["--task", "torch", "--tiny"])


# --task pretraining --tiny: the vision tower above, one text layer and one
# fusion layer of width D with FFN F = 64, vocabulary V = 100, ITC width
# E = 16, queue Q = 16; the test's batch: B = 4 pairs of L = 8 tokens with
# S = ceil(2 * 0.15 * L) = 3 MLM prediction slots.
F, V, E, Q, B, L, S = 64, 100, 16, 16, 4, 8, 3


def text_layer_flops():
    """One BERT layer over the L text tokens."""
    flops = 4 * (2 * L * D * D)  # query, key, value, output projections
    flops += 2 * (2 * L * L * D)  # q.k scores, weighted sum of v
    flops += 2 * (2 * L * D * F)  # the FFN's two matmuls
    return flops


def fusion_layer_flops(image_tokens):
    """One fusion layer: a text layer plus cross-attention to the image."""
    flops = text_layer_flops()  # self-attention and FFN
    flops += 2 * (2 * L * D * D)  # cross-attention query, output (text side)
    flops += 2 * (2 * image_tokens * D * D)  # keys, values of the image tokens
    flops += 2 * (2 * L * image_tokens * D)  # text-to-image scores, weighted sum
    return flops


def pretraining_step_flops(lengths):
    """One training step with the momentum model, written out by part."""
    image = PATCH_EMBEDDING + sum(
        block_flops(a, b) for a, b in itertools.pairwise(lengths)
    )
    text = text_layer_flops()
    fusion = fusion_layer_flops(lengths[-1])
    projections = 2 * B * (2 * D * E)  # image and text [CLS] to E
    similarities = 2 * (2 * B * (B + Q) * E)  # i2t and t2i against B + Q
    itm_head = 3 * B * (2 * D * 2)  # 3B fused [CLS] -> 2 logits
    mlm_head = B * (2 * S * D * D + 2 * S * D * V)  # dense + vocabulary
    forward = (
        2 * B * text  # unmasked (ITC, ITM, guidance) and masked (MLM) text
        + B * image  # one text-guided vision pass per pair
        + (3 * B + B) * fusion  # ITM: B positives, 2B negatives; MLM: B
        + projections
        + similarities
        + itm_head
        + mlm_head
    )
    # Gradients of both operands of each matmul, except the pixels and the
    # momentum features and queues (stop_gradient) in the similarities.
    backward = 2 * forward - B * PATCH_EMBEDDING - similarities
    # The momentum model: ITC features (text, vision, projections and
    # similarities) and MLM soft targets (masked text, fusion and MLM head).
    momentum = B * text + B * image + projections + similarities
    momentum += B * text + B * fusion + mlm_head
    return forward + backward + momentum


EXPECTED_STEP_FLOPS = {
    "none": 8_686_080 + 16_580_608 + 5_575_680,  # forward, backward, momentum
    "keep0.7": 7_899_648 + 15_007_744 + 5_096_448,
    "keep0.5": 7_012_864 + 13_234_176 + 4_516_864,
}


def test_hand_written_pretraining_step_flops():
    for name, expected in EXPECTED_STEP_FLOPS.items():
        assert pretraining_step_flops(LENGTHS[name]) == expected, name


def test_pretraining_step_flops_match_hand_computed_values():
    from keras_trips.utils.flops import pretraining_step_flops

    cli = load_cli()
    args = cli.parse_args(["--task", "pretraining", "--tiny"])
    pretrainers, _ = cli.build_pretrainers(args, jit_compile=False)
    for name, pretrainer in pretrainers.items():
        flops = pretraining_step_flops(pretrainer, B, L, S)
        assert flops == EXPECTED_STEP_FLOPS[name], name
        assert pretrainer.backbone.vision_encoder.sequence_lengths() == LENGTHS[name]


def run_pretraining_cli(tmp_path_factory, *flags):
    return run_cli(
        tmp_path_factory, "--task", "pretraining", "--batch-size", str(B), *flags
    )


@end_to_end
def test_pretraining_cli_writes_its_report(tmp_path_factory):
    # The reference alone, not compiled by XLA: compiling pre-training steps
    # takes a minute or two on a small CPU.
    report = run_pretraining_cli(
        tmp_path_factory, "--configs", "none", "--jit-compile", "false"
    )
    check_pretraining_report(report, {"none"})


@end_to_end
@pytest.mark.slow
def test_pretraining_cli_times_selection_compiled(tmp_path_factory):
    report = run_pretraining_cli(tmp_path_factory, "--configs", "keep0.5")
    check_pretraining_report(report, {"none", "keep0.5"})


def check_pretraining_report(report, configs):
    assert report["task"] == "pretraining"
    assert report["batch_size"] == B
    assert (report["text_length"], report["num_masked"]) == (L, S)
    assert report["architecture"]["queue_size"] == Q
    assert report["architecture"]["use_momentum"] is True
    results = report["results"]
    assert set(results) == configs
    parts = {"text_encoder", "vision_encoder", "fusion_encoder", "heads"}
    parts |= {"backward", "momentum"}
    for name, result in results.items():
        assert result["flops_per_step"] == EXPECTED_STEP_FLOPS[name], name
        assert set(result["gflops_by_part"]) == parts
        assert sum(result["gflops_by_part"].values()) == pytest.approx(
            result["gflops_per_step"]
        )
        assert result["predicted_speedup"] == pytest.approx(
            EXPECTED_STEP_FLOPS["none"] / EXPECTED_STEP_FLOPS[name], rel=1e-12
        )
        assert result["sequence_lengths"] == LENGTHS[name]
        assert result["trainable_parameters"] > 0
    check_timings(results, ["train"])

"""Throughput of keras-hub vision encoders with and without TRIPS selection.

For each encoder (CLIP ViT-B/16 and SigLIP-B/16 shapes, random weights), the
original keras-hub model is timed against `with_patch_selection` of it at
several keep rates, forward (`predict_on_batch`), beside the speedup that the
analytic FLOPs predict. Models run as in `keras_trips.utils.benchmarking`: a
functional classifier (a linear head on the [CLS] or pooled output), compiled
alike, calls interleaved; speedups are medians of per-round ratios against
the original encoder.
"""

import os

import keras
import keras_hub

from keras_trips.models import with_patch_selection
from keras_trips.utils import benchmarking
from keras_trips.utils.flops import (
    attention_flops,
    feedforward_flops,
    selecting_blocks_flops,
)

# ViT-B/16 towers at 224 px: 196 patches, 12 blocks, width 768, MLP 3072.
BASE = dict(patch_size=16, hidden_dim=768, num_layers=12, num_heads=12)
TINY = dict(patch_size=8, hidden_dim=32, num_layers=2, num_heads=2)
ENCODERS = {
    "clip": (
        keras_hub.models.CLIPVisionEncoder,
        {"intermediate_activation": "quick_gelu"},
    ),
    "siglip": (
        keras_hub.models.SigLIPVisionEncoder,
        {"intermediate_activation": "gelu_approximate"},
    ),
}
ORIGINAL = "original"


def build_encoder(name, image_size, tiny=False):
    """A keras-hub vision encoder of the named family, random weights."""
    if name not in ENCODERS:
        raise ValueError(f"Unknown encoder {name!r}; choose from {sorted(ENCODERS)}")
    encoder_class, options = ENCODERS[name]
    architecture = TINY if tiny else BASE
    return encoder_class(
        **architecture,
        intermediate_dim=4 * architecture["hidden_dim"],
        image_shape=(image_size, image_size, 3),
        name=f"{name}_vision",
        **options,
    )


def selecting_encoder_flops(selecting, keep_rate=None, text_guided=True):
    """Forward FLOPs of one image through a `TRIPSSelectingEncoder` (at keep
    rate 1.0: through its encoder), matrix products only.

    Patch projection, per block the attention over the tokens that enter it
    and the MLP over those that leave its selection (a plain two-layer MLP),
    per selection stage the scores, the fused token and the text query
    projection, and SigLIP's attention-pooling head (one query).
    """
    encoder = selecting.encoder
    width = selecting.hidden_dim
    mlp_dim = getattr(encoder, "intermediate_dim", None) or encoder.mlp_dim
    patch = encoder.patch_size
    patch_height, patch_width = (patch, patch) if isinstance(patch, int) else patch
    channels = 3
    flops = 2 * selecting.num_patches * patch_height * patch_width * channels * width
    lengths = selecting.sequence_lengths(keep_rate)
    flops += selecting_blocks_flops(
        lengths, width, mlp_dim, selecting.num_prefix_tokens, text_guided
    )
    if isinstance(encoder, keras_hub.models.SigLIPVisionEncoder):
        flops += attention_flops(1, lengths[-1], width)
        flops += feedforward_flops(1, width, mlp_dim)
    return flops


def _classifier(model, inputs, name):
    features = model(inputs)
    pooled = features if len(features.shape) == 2 else features[:, 0]
    logits = keras.layers.Dense(10, name="head")(pooled)
    return keras.Model(inputs, logits, name=name)


def benchmark_keras_hub_encoders(
    encoders=("clip", "siglip"),
    image_size=224,
    batch_size=8,
    steps=5,
    warmup=1,
    selection_layers=(4, 9),
    keep_rates=(1.0, 0.7, 0.5),
    jit_compile=True,
    tiny=False,
):
    """Times each keras-hub encoder against its TRIPS-selecting versions.

    Args:
        encoders: names from `ENCODERS`.
        image_size: int. Square image side.
        batch_size: int.
        steps: int. Timed interleaved rounds.
        warmup: int. Untimed rounds after the compiling call.
        selection_layers: blocks that select.
        keep_rates: keep rates of the selecting versions (1.0: none selects).
        jit_compile: passed to `model.compile`.
        tiny: small random models (smoke tests).

    Returns:
        dict encoder -> `"load_average"` (the machine's 1, 5 and 15 minute
        load averages before and after timing it) and `"configs"`: dict
        config (`"original"`, `"keep0.7"`, ...) -> FLOPs per image, the
        predicted speedup, token counts and the `"forward"` timing summary
        (`benchmarking.timing_summary`).
    """
    image_shape = (image_size, image_size, 3)
    report = {}
    for name in encoders:
        load_average = {"before": list(os.getloadavg())}
        encoder = build_encoder(name, image_size, tiny)
        width = encoder.hidden_dim
        images, text, _ = benchmarking.random_batch(image_shape, batch_size, width)
        image_input = {"images": keras.Input(image_shape, name="images")}
        text_input = {
            **image_input,
            "text_embedding": keras.Input((width,), name="text_embedding"),
        }
        selecting = {
            f"keep{rate}": with_patch_selection(encoder, selection_layers, rate)
            for rate in keep_rates
        }
        reference = next(iter(selecting.values()))
        reference_flops = selecting_encoder_flops(reference, keep_rate=1.0)
        models = {ORIGINAL: _classifier(encoder, image_input, f"{name}_original")}
        data = {ORIGINAL: {"images": images}}
        results = {
            ORIGINAL: {
                "flops_per_image": reference_flops,
                "predicted_speedup": 1.0,
                "sequence_lengths": reference.sequence_lengths(keep_rate=1.0),
            }
        }
        for config, model in selecting.items():
            models[config] = _classifier(
                model, text_input, f"{name}_{config.replace('.', '_')}"
            )
            data[config] = {"images": images, "text_embedding": text}
            flops = selecting_encoder_flops(model)
            results[config] = {
                "flops_per_image": flops,
                "predicted_speedup": reference_flops / flops,
                "sequence_lengths": model.sequence_lengths(),
            }
        for model in models.values():
            benchmarking.compile_classifier(model, jit_compile=jit_compile)
        timings = benchmarking.interleaved_timings(
            {
                config: (lambda m=model, x=data[config]: m.predict_on_batch(x))
                for config, model in models.items()
            },
            steps=steps,
            warmup=warmup,
        )
        load_average["after"] = list(os.getloadavg())
        reference_times = timings[ORIGINAL]["times_s"]
        for config, timing in timings.items():
            predicted = results[config]["predicted_speedup"]
            results[config]["forward"] = benchmarking.timing_summary(
                timing, reference_times, batch_size, predicted
            )
        report[name] = {"load_average": load_average, "configs": results}
    return report


def format_keras_hub_table(results):
    """The `benchmark_keras_hub_encoders` results as a text table."""
    header = (
        f"{'encoder':<8} {'config':<9} {'tokens':>7} {'ms/batch':>9} {'img/s':>7} "
        f"{'GFLOPs':>7} {'pred x':>7} {'meas x':>7} {'meas/pred':>9}"
    )
    lines = [header, "-" * len(header)]
    for name, result in results.items():
        load = result["load_average"]
        lines.append(
            f"{name}: load average (1 min) {load['before'][0]:.2f} before, "
            f"{load['after'][0]:.2f} after"
        )
        for config, entry in result["configs"].items():
            timing = entry["forward"]
            lines.append(
                f"{name:<8} {config:<9} {entry['sequence_lengths'][-1]:>7} "
                f"{timing['median_ms']:>9.1f} {timing['images_per_s']:>7.1f} "
                f"{entry['flops_per_image'] / 1e9:>7.2f} "
                f"{entry['predicted_speedup']:>7.3f} "
                f"{timing['measured_speedup']:>7.3f} "
                f"{timing['measured_over_predicted']:>9.3f}"
            )
    return "\n".join(lines)

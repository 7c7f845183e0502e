"""Convert ViT or CLIP vision weights into a TRIPS vision encoder `.keras` file.

The source is a Hugging Face checkpoint folder (ViT, CLIP vision or CLIP:
config.json + model.safetensors) or, with `--keras-hub`, a local keras-hub
preset of a ViTBackbone, CLIPVisionEncoder or CLIPBackbone. The saved model is
a `TRIPSVisionEncoder`.

    python tools/convert_vision.py path/to/vit-base-patch16-224 vision.keras \
        --image-size 384 --selection-layers 4,9 --keep-rate 0.7
"""

import argparse

import keras_hub

from keras_trips.converters import vision_encoder_from_hf, vision_encoder_from_keras_hub


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", help="checkpoint folder or keras-hub preset")
    parser.add_argument("output", help="where to write the .keras file")
    parser.add_argument(
        "--keras-hub",
        action="store_true",
        help="the source is a keras-hub preset, not a Hugging Face checkpoint",
    )
    parser.add_argument(
        "--image-size",
        type=int,
        default=None,
        help="target image side; position embeddings are interpolated "
        "(default: the source's)",
    )
    parser.add_argument(
        "--selection-layers",
        default="4,9",
        help="comma-separated 0-based blocks that select patches, '' for none "
        "(default: 4,9, the paper's for 12 blocks)",
    )
    parser.add_argument(
        "--keep-rate", type=float, default=0.7, help="keep rate at each stage"
    )
    args = parser.parse_args(argv)

    selection = {
        "selection_layers": [int(i) for i in args.selection_layers.split(",") if i],
        "keep_rate": args.keep_rate,
    }
    if args.keras_hub:
        model = keras_hub.models.Backbone.from_preset(args.source)
        encoder = vision_encoder_from_keras_hub(model, args.image_size, **selection)
    else:
        encoder = vision_encoder_from_hf(args.source, args.image_size, **selection)
    encoder.save(args.output)
    print(
        f"Saved a {encoder.num_layers}-block vision encoder "
        f"(image {encoder.image_shape}, hidden {encoder.hidden_dim}, "
        f"{encoder.count_params():,} parameters) to {args.output}"
    )


if __name__ == "__main__":
    main()

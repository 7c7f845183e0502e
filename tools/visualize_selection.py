"""Draw what TRIPS patch selection keeps for one image and one caption.

MODEL is a saved `.keras` TRIPSPretrainer, TRIPSBackbone, TRIPSVisionEncoder
or `with_patch_selection` model, or a preset directory. IMAGE is any picture Pillow reads; it is
centre-cropped to a square and resized to the model's image size. With a
pretrainer or backbone the caption is embedded by its text tower; a bare
vision encoder needs `--text-embedding` (a `.npy` of shape (D,) or (1, D)),
else it shows image and random guidance only and says so.

    python tools/visualize_selection.py runs/tiny/pretrainer.keras scene.png \\
        "a cow above a crown" --output selection.png
"""

import argparse
import os
import sys

import numpy as np
from PIL import Image

from keras_trips.utils import load_model
from keras_trips.visualization import plot_selection
from keras_trips.visualization.selection_plot import vision_model_of


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="a saved .keras model or a preset directory")
    parser.add_argument("image", help="an image file")
    parser.add_argument("text", help="the caption")
    parser.add_argument("--output", default="selection.png", help="the PNG to write")
    parser.add_argument(
        "--text-embedding",
        default=None,
        help="a .npy text embedding, for a bare vision encoder",
    )
    parser.add_argument(
        "--keep-rate",
        type=lambda s: tuple(float(r) for r in s.split(",")),
        default=None,
        help="keep rate(s), e.g. 0.5 or 0.7,0.7 (default: the model's)",
    )
    parser.add_argument(
        "--no-clip-normalization",
        action="store_true",
        help="feed pixels in [0, 1] instead of CLIP-normalised ones",
    )
    return parser.parse_args(argv)


def load_image(path, size):
    """The image centre-cropped to a square, resized to `size` (h, w), [0, 1]."""
    image = Image.open(path).convert("RGB")
    side = min(image.size)
    left, top = (image.width - side) // 2, (image.height - side) // 2
    image = image.crop((left, top, left + side, top + side))
    image = image.resize((size[1], size[0]), Image.Resampling.BICUBIC)
    return np.asarray(image, "float32") / 255.0


def main(argv=None):
    args = parse_args(argv)
    model = load_model(args.model)
    encoder, backbone = vision_model_of(model)
    image = load_image(args.image, encoder.image_shape[:2])
    text_embedding = None
    if args.text_embedding is not None:
        text_embedding = np.load(args.text_embedding)
    elif backbone is None:
        print(
            f"{args.model} has no text tower and no --text-embedding was given: "
            "drawing image and random guidance only."
        )
    keep_rate = args.keep_rate
    if keep_rate is not None and len(keep_rate) == 1:
        keep_rate = keep_rate[0]
    plot_selection(
        model,
        image,
        args.text,
        text_embedding=text_embedding,
        keep_rate=keep_rate,
        preprocess=None if args.no_clip_normalization else "clip",
        path=args.output,
    )
    print(f"wrote {os.path.abspath(args.output)}")
    return args.output


if __name__ == "__main__":
    main(sys.argv[1:])

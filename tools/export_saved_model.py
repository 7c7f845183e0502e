"""Export a TRIPS `.keras` model as a TF SavedModel for TensorFlow Serving.

The model is loaded under the TensorFlow backend (or JAX with `--backend
jax`) whatever KERAS_BACKEND says: a `.keras` file saved under torch, which
cannot write SavedModels, exports from here. Images and text length are
fixed at export, the batch dimension is dynamic. Each signature with images
takes raw uint8 pixels (`images_uint8`, any size, resized and normalised
inside); its `_normalized` twin takes CLIP-normalised float32. See
`keras_trips.export.export_saved_model` for the signatures and their inputs.

    python tools/export_saved_model.py trips.keras serving/trips/1 \
        --sequence-length 30 --signatures itm image_embedding text_embedding
"""

import argparse
import os
import sys


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="the .keras file or a preset directory")
    parser.add_argument("output", help="directory to write the SavedModel to")
    parser.add_argument(
        "--signatures",
        nargs="+",
        default=None,
        help="signatures to export (default: all the model's; a pretrainer "
        "has itm, image_embedding, text_embedding, features)",
    )
    parser.add_argument(
        "--default-signature",
        default=None,
        help="the one whose raw-pixel form is served as serving_default "
        "(default: the model's first, itm for a pretrainer, features for a "
        "backbone)",
    )
    parser.add_argument(
        "--sequence-length",
        type=int,
        default=None,
        help="text length fixed at export (default: the model's max_sequence_length)",
    )
    parser.add_argument(
        "--backend",
        choices=("tensorflow", "jax"),
        default="tensorflow",
        help="Keras backend to load and export under (default: tensorflow)",
    )
    args = parser.parse_args(argv)

    # The backend is chosen once, when keras is first imported.
    if "keras" in sys.modules and sys.modules["keras"].backend.backend() != (
        args.backend
    ):
        raise RuntimeError(
            f"Keras is already imported with another backend; run this as a "
            f"script to export under {args.backend}."
        )
    os.environ["KERAS_BACKEND"] = args.backend

    import keras_trips

    model = keras_trips.utils.load_model(args.model, compile=False)
    names = keras_trips.export.export_saved_model(
        model,
        args.output,
        signatures=args.signatures,
        default_signature=args.default_signature,
        sequence_length=args.sequence_length,
    )
    print(
        f"Exported {type(model).__name__} from {args.model} to {args.output} "
        f"under {args.backend}: signatures {', '.join(names)} "
        f"(serving_default: {names[0]})"
    )


if __name__ == "__main__":
    main()

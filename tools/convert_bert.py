"""Convert a Hugging Face BERT checkpoint into a TRIPS text encoder `.keras` file.

The saved model maps `{"token_ids", "padding_mask"}` to the text sequence
`(batch, length, hidden_dim)`; its only layer is a `TRIPSTextEncoder`.

    python tools/convert_bert.py path/to/bert-base-uncased text_encoder.keras \
        --num-layers 6
"""

import argparse

import keras

from keras_trips.converters import text_encoder_from_bert


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "checkpoint_dir", help="folder with config.json and model.safetensors"
    )
    parser.add_argument("output", help="where to write the .keras file")
    parser.add_argument(
        "--num-layers",
        type=int,
        default=None,
        help="keep only the first N BERT layers (ALBEF/TRIPS: 6 of 12); default: all",
    )
    args = parser.parse_args()

    encoder = text_encoder_from_bert(args.checkpoint_dir, num_layers=args.num_layers)
    token_ids = keras.Input((None,), dtype="int32", name="token_ids")
    padding_mask = keras.Input((None,), dtype="bool", name="padding_mask")
    model = keras.Model(
        {"token_ids": token_ids, "padding_mask": padding_mask},
        encoder(token_ids, padding_mask=padding_mask),
        name="trips_text_encoder",
    )
    model.save(args.output)
    print(
        f"Saved {encoder.num_layers} BERT layers "
        f"(hidden {encoder.hidden_dim}, {encoder.count_params():,} parameters) "
        f"to {args.output}"
    )


if __name__ == "__main__":
    main()

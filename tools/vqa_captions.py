"""Write a VQA training set's question-answer pairs as an ALBEF caption file.

Pre-training on it (`recipes/pretrain.py --data-format albef`) before
fine-tuning on the same questions gives the vision tower what the answers
name (`keras_trips.data.vqa_caption_rows`; yes/no pairs are left out).

    python tools/vqa_captions.py runs/easy_vqa_captions.json
    python tools/vqa_captions.py captions.json --data vqa-v2 \
        --questions Q.json --annotations A.json --image-root train2014/
"""

import argparse
import json
import os
import sys

# The recipes' filter keeps TensorFlow's C++ start-up notes off the console.
sys.path.insert(
    0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "recipes")
)
import native_logs

native_logs.filter_native_logs()

from keras_trips.data import (  # noqa: E402
    easy_vqa_records,
    read_vqa_records,
    vqa_caption_rows,
)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", help="The ALBEF caption file to write.")
    parser.add_argument("--data", choices=("easy-vqa", "vqa-v2"), default="easy-vqa")
    parser.add_argument("--questions", help="vqa-v2: the training questions.")
    parser.add_argument("--annotations", help="vqa-v2: their annotations.")
    parser.add_argument(
        "--image-root", help="vqa-v2: the image folder (default: the questions')."
    )
    args = parser.parse_args(argv)
    if args.data == "vqa-v2":
        if not (args.questions and args.annotations):
            parser.error("--data vqa-v2 needs --questions and --annotations.")
        records, _ = read_vqa_records(args.questions, args.annotations, args.image_root)
    else:
        records = easy_vqa_records("train")
    rows = vqa_caption_rows(records)
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w") as file:
        json.dump(rows, file)
    captions = sum(len(row["caption"]) for row in rows)
    print(
        f"{args.output}: {len(rows)} images, {captions} captions from "
        f"{len(records)} questions (yes/no and unanswered ones left out)"
    )
    return rows


if __name__ == "__main__":
    main()

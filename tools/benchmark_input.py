"""Input-pipeline throughput: pre-training batches of the scenes dataset.

Reports images/s of the tf.data pipeline alone (decode, augment, tokenise,
MLM-mask, batch), to compare with the model's training images/s.

    python tools/benchmark_input.py --batch-size 32 --image-size 64 --cache-images
"""

import argparse
import os
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

from keras_trips.datasets.scenes import scenes_dataset


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--num-train", type=int, default=4000)
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--warmup-batches", type=int, default=20)
    parser.add_argument("--cache-images", action="store_true")
    args = parser.parse_args()
    dataset = scenes_dataset(
        "train",
        task="pretraining",
        batch_size=args.batch_size,
        image_size=args.image_size,
        num_train=args.num_train,
        cache_images=args.cache_images,
    ).repeat()
    iterator = iter(dataset)
    for _ in range(args.warmup_batches):
        next(iterator)
    start = time.perf_counter()
    for _ in range(args.batches):
        next(iterator)
    seconds = time.perf_counter() - start
    images_per_second = args.batches * args.batch_size / seconds
    print(
        f"input pipeline: {images_per_second:.0f} images/s "
        f"({args.batches / seconds:.1f} batches/s of {args.batch_size}, "
        f"{args.image_size} px, cache_images={args.cache_images}, "
        f"{os.cpu_count()} CPUs)"
    )
    print(f"input_images_per_second={images_per_second:.1f}")


if __name__ == "__main__":
    main()

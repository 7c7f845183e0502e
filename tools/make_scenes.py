"""Generate the procedural scenes dataset to a folder.

python tools/make_scenes.py /tmp/scenes --num-train 4000 --image-size 64
"""

import argparse
import json
import time

from keras_trips.datasets.scenes import make_scenes


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir")
    parser.add_argument("--num-train", type=int, default=2000)
    parser.add_argument("--num-val", type=int, default=200)
    parser.add_argument("--num-test", type=int, default=200)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--held-out-fraction", type=float, default=0.1)
    args = parser.parse_args()
    start = time.perf_counter()
    files = make_scenes(
        args.out_dir,
        num_train=args.num_train,
        num_val=args.num_val,
        num_test=args.num_test,
        image_size=args.image_size,
        seed=args.seed,
        held_out_fraction=args.held_out_fraction,
    )
    total = args.num_train + args.num_val + args.num_test
    print(json.dumps(files, indent=2))
    print(f"{total} scenes in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()

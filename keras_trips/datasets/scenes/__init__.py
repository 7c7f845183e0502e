"""Procedural scenes: real sprites (emoji, Fashion-MNIST photos, shapes) on
plain or textured backgrounds, with exact boxes and captions, VQA, referring
expressions and two-image statements written in `keras_trips.data` formats.

Example:
```python
from keras_trips.datasets import scenes

files = scenes.make_scenes("/tmp/scenes", num_train=1000)
dataset = scenes.scenes_dataset("train", task="pretraining", batch_size=32)
```
"""

from keras_trips.datasets.scenes.catalog import available_categories
from keras_trips.datasets.scenes.generator import (
    TASKS,
    cache_dir,
    load_scenes,
    make_scenes,
    scenes_dataset,
)
from keras_trips.datasets.scenes.sprite_bank import SpriteBank

__all__ = [
    "TASKS",
    "SpriteBank",
    "available_categories",
    "cache_dir",
    "load_scenes",
    "make_scenes",
    "scenes_dataset",
]

"""Sampling and drawing one scene: objects on a plain or textured background.

A scene is a JSON-ready dict `{"objects": [...], "background": {...}}`;
each object holds its `category` (noun), `kind`, `color` (shapes only),
`variant` (Fashion-MNIST photo), the `size` it was drawn at and exact `box` `[x1, y1, x2, y2]` in pixels
(x2, y2 exclusive): the rectangle its sprite was pasted into, whose border
rows and columns all touch opaque sprite pixels. Objects never overlap, so
every box is fully visible.
"""

import numpy as np

from keras_trips.datasets.scenes import catalog

MIN_OBJECTS = 3
MAX_OBJECTS = 6
# Probability that a new object repeats a category already in the scene,
# so that counting questions have answers above one.
_REPEAT_PROBABILITY = 0.25
# Sprite sizes (longer side) as fractions of the image size.
_SIZE_RANGE = (0.2, 0.32)
_PLACEMENT_TRIES = 60


def sample_scene(
    rng, categories, image_size, bank, held_out_partners, required_pair=None
):
    """Sample and draw a scene; returns `(scene, image)` (uint8 HxWx3).

    Without `required_pair`, no held-out pair of categories shares the scene
    (`held_out_partners` maps a category name to the names it must not meet).
    With it, the scene holds both categories of `required_pair` (and
    anything else).
    """
    by_name = {category.name: category for category in categories}
    while True:
        names = _sample_names(rng, categories, held_out_partners, required_pair)
        objects, sprites = _place_objects(rng, names, by_name, image_size, bank)
        placed = {obj["category"] for obj in objects}
        if len(objects) >= MIN_OBJECTS and (
            required_pair is None or set(required_pair) <= placed
        ):
            break
    background = _sample_background(rng)
    image = draw_background(background, image_size)
    for obj, sprite in zip(objects, sprites, strict=True):
        x1, y1, x2, y2 = obj["box"]
        region = image[y1:y2, x1:x2]
        opaque = sprite[..., 3] > 0
        region[opaque] = sprite[..., :3][opaque]
    return {"objects": objects, "background": background}, image


def _sample_names(rng, categories, held_out_partners, required_pair):
    count = int(rng.integers(MIN_OBJECTS, MAX_OBJECTS + 1))
    names = list(required_pair) if required_pair else []
    forbidden = set()
    if not required_pair:
        for name in names:
            forbidden |= held_out_partners.get(name, set())
    while len(names) < count:
        if names and rng.random() < _REPEAT_PROBABILITY:
            names.append(names[int(rng.integers(len(names)))])
            continue
        allowed = [c.name for c in categories if c.name not in forbidden]
        name = allowed[int(rng.integers(len(allowed)))]
        names.append(name)
        if not required_pair:
            forbidden |= held_out_partners.get(name, set())
    return names


def _place_objects(rng, names, by_name, image_size, bank):
    low, high = (max(4, round(f * image_size)) for f in _SIZE_RANGE)
    objects, sprites = [], []
    for name in names:
        category = by_name[name]
        color = None
        if category.kind == "shape":
            color = str(rng.choice(list(catalog.COLORS)))
        variant = int(rng.integers(1 << 30)) if category.kind == "fashion" else None
        size = int(rng.integers(low, high + 1))
        sprite = bank.sprite(category, size, color=color, variant=variant or 0)
        height, width = sprite.shape[:2]
        for _ in range(_PLACEMENT_TRIES):
            x = int(rng.integers(0, image_size - width + 1))
            y = int(rng.integers(0, image_size - height + 1))
            box = [x, y, x + width, y + height]
            # One free pixel between objects keeps relations unambiguous.
            if not any(_overlaps(box, other["box"], margin=1) for other in objects):
                objects.append(
                    {
                        "category": name,
                        "kind": category.kind,
                        "color": color,
                        "variant": variant,
                        "size": size,
                        "box": box,
                    }
                )
                sprites.append(sprite)
                break
    return objects, sprites


def _overlaps(a, b, margin):
    return (
        a[0] < b[2] + margin
        and b[0] < a[2] + margin
        and a[1] < b[3] + margin
        and b[1] < a[3] + margin
    )


def _sample_background(rng):
    base = [int(v) for v in rng.integers(150, 256, size=3)]
    pattern = str(rng.choice(["plain", "stripes", "checker", "noise"]))
    return {
        "pattern": pattern,
        "color": base,
        "period": int(rng.integers(4, 12)),
        "seed": int(rng.integers(1 << 31)),
    }


def draw_background(background, image_size):
    """Draw a background described by `_sample_background`."""
    base = np.array(background["color"], np.int16)
    image = np.broadcast_to(base, (image_size, image_size, 3)).copy()
    grid = np.arange(image_size)
    period = background["period"]
    if background["pattern"] == "stripes":
        image[(grid // period) % 2 == 1, :] -= 30
    elif background["pattern"] == "checker":
        cells = ((grid[:, None] // period) + (grid[None, :] // period)) % 2 == 1
        image[cells] -= 30
    elif background["pattern"] == "noise":
        noise = np.random.default_rng(background["seed"]).integers(
            -25, 26, size=(image_size, image_size, 1)
        )
        image += noise.astype(np.int16)
    return np.clip(image, 0, 255).astype(np.uint8)


def relations(a, b):
    """The spatial relations of object `a` to object `b` that clearly hold."""
    found = []
    if a["box"][2] <= b["box"][0]:
        found.append("left of")
    if a["box"][0] >= b["box"][2]:
        found.append("right of")
    if a["box"][3] <= b["box"][1]:
        found.append("above")
    if a["box"][1] >= b["box"][3]:
        found.append("below")
    return found

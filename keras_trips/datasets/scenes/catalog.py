"""The object categories and colours the scene generator draws from.

Plain shapes are always available; emoji (Noto Color Emoji, Debian
`fonts-noto-color-emoji`) and Fashion-MNIST photos (Debian
`dataset-fashion-mnist`) join in when their packages are installed.
"""

import os
import unicodedata

from keras_trips.datasets.scenes.scene_category import SceneCategory

EMOJI_FONT_PATH = "/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf"
FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"

COLORS = {
    "red": (220, 40, 40),
    "green": (40, 160, 60),
    "blue": (40, 80, 220),
    "yellow": (240, 200, 30),
    "purple": (140, 60, 180),
    "orange": (250, 130, 20),
}
SHAPES = ("circle", "square", "triangle")

# Unicode name -> caption word: clear, single-object glyphs only.
EMOJI = {
    "DOG FACE": "dog",
    "CAT FACE": "cat",
    "MOUSE FACE": "mouse",
    "RABBIT FACE": "rabbit",
    "BEAR FACE": "bear",
    "PANDA FACE": "panda",
    "FROG FACE": "frog",
    "PIG FACE": "pig",
    "MONKEY FACE": "monkey",
    "TIGER FACE": "tiger",
    "COW FACE": "cow",
    "HORSE FACE": "horse",
    "CHICKEN": "chicken",
    "PENGUIN": "penguin",
    "FISH": "fish",
    "OCTOPUS": "octopus",
    "SNAIL": "snail",
    "TURTLE": "turtle",
    "SNAKE": "snake",
    "SPOUTING WHALE": "whale",
    "ELEPHANT": "elephant",
    "OWL": "owl",
    "RED APPLE": "apple",
    "BANANA": "banana",
    "STRAWBERRY": "strawberry",
    "LEMON": "lemon",
    "PINEAPPLE": "pineapple",
    "CARROT": "carrot",
    "PEAR": "pear",
    "MUSHROOM": "mushroom",
    "SLICE OF PIZZA": "pizza",
    "HAMBURGER": "burger",
    "BIRTHDAY CAKE": "cake",
    "DOUGHNUT": "donut",
    "COOKIE": "cookie",
    "HOT BEVERAGE": "cup",
    "AUTOMOBILE": "car",
    "BUS": "bus",
    "BICYCLE": "bicycle",
    "ROCKET": "rocket",
    "SAILBOAT": "boat",
    "HOUSE BUILDING": "house",
    "MOBILE PHONE": "phone",
    "GUITAR": "guitar",
    "TRUMPET": "trumpet",
    "CLOSED UMBRELLA": "umbrella",
    "KEY": "key",
    "CLOSED BOOK": "book",
    "HAMMER": "hammer",
    "ALARM CLOCK": "clock",
    "ELECTRIC LIGHT BULB": "bulb",
    "DECIDUOUS TREE": "tree",
    "CACTUS": "cactus",
    "SUNFLOWER": "flower",
    "MAPLE LEAF": "leaf",
    "WRAPPED PRESENT": "gift",
    "BALLOON": "balloon",
    "CROWN": "crown",
    "SOCCER BALL": "ball",
}

# Fashion-MNIST class index -> caption word (trousers left out: no "a trousers").
FASHION = {
    0: "t-shirt",
    2: "pullover",
    3: "dress",
    4: "coat",
    5: "sandal",
    6: "shirt",
    7: "sneaker",
    8: "bag",
    9: "boot",
}

_IRREGULAR_PLURALS = {"mouse": "mice", "fish": "fish"}


def plural(word):
    """English plural of the catalog's nouns."""
    if word in _IRREGULAR_PLURALS:
        return _IRREGULAR_PLURALS[word]
    if word.endswith(("s", "sh", "ch", "x")):
        return word + "es"
    return word + "s"


def emoji_available():
    return os.path.isfile(EMOJI_FONT_PATH)


def fashion_available():
    return os.path.isfile(os.path.join(FASHION_MNIST_DIR, "train-images-idx3-ubyte.gz"))


def available_categories():
    """All categories that can be drawn here, shapes first."""
    categories = [SceneCategory(s, plural(s), "shape", s) for s in SHAPES]
    if emoji_available():
        categories += [
            SceneCategory(word, plural(word), "emoji", unicodedata.lookup(name))
            for name, word in EMOJI.items()
        ]
    if fashion_available():
        categories += [
            SceneCategory(word, plural(word), "fashion", index)
            for index, word in FASHION.items()
        ]
    return categories

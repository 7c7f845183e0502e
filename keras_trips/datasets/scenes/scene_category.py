from typing import NamedTuple


class SceneCategory(NamedTuple):
    """One kind of object the scene generator can place.

    Args:
        name: str. The noun used in text ("dog", "circle").
        plural: str. Its plural ("dogs", "circles").
        kind: str. `"shape"`, `"emoji"` or `"fashion"`: how it is drawn.
        source: the shape name, the emoji character or the Fashion-MNIST
            class index.

    Example:
    ```python
    SceneCategory("dog", "dogs", "emoji", "\\U0001f436")
    ```
    """

    name: str
    plural: str
    kind: str
    source: object

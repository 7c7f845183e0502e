"""Pictures of what TRIPS patch selection keeps.

For one image and one caption, `plot_selection` draws a column per guidance
mode (text, image, random): on top the image with the patches kept by each
selection stage outlined (one colour per stage) and the fused patches shaded
by their fusion weight; below, the first stage's score heat-map. The caption
names the text and the keep rates. Everything is read from the model's
`selection_trace` (per-stage provenance and scores), so the picture shows
what the model computed. Rendering uses matplotlib's Agg backend (no display).
"""

import os
import warnings

import numpy as np
from keras import ops

from keras_trips.data.image_ops import CLIP_MEAN, CLIP_STD

GUIDANCES = ("text", "image", "random")
GUIDANCE_TITLES = {
    "text": "text guidance (TRIPS)",
    "image": "image guidance (EViT)",
    "random": "random scores",
}
# Outline colours of the selection stages, first to last.
STAGE_COLOURS = ("#ffd400", "#00e0ff", "#ff4fd8", "#7dff4f")
# Figure geometry, in inches: a square panel per guidance and row, a band
# for the caption on top and one for the legend below.
PANEL_INCHES = 3.2
CAPTION_INCHES = 0.8
LEGEND_INCHES = 0.45
DPI = 100


def figure_size_px(num_columns, dpi=DPI):
    """`(width, height)` in pixels of a picture with `num_columns` guidances."""
    width = num_columns * PANEL_INCHES
    height = 2 * PANEL_INCHES + CAPTION_INCHES + LEGEND_INCHES
    return round(width * dpi), round(height * dpi)


def vision_model_of(model):
    """`(vision encoder, TRIPSBackbone or None)` of a pretrainer, backbone,
    `TRIPSVisionEncoder` or `TRIPSSelectingEncoder`."""
    backbone = getattr(model, "backbone", model)
    if hasattr(backbone, "vision_encoder") and hasattr(backbone, "encode_text"):
        return backbone.vision_encoder, backbone
    if hasattr(model, "selection_trace"):
        return model, None
    raise ValueError(
        "`model` must be a TRIPSPretrainer, TRIPSBackbone, TRIPSVisionEncoder or "
        f"a model built by with_patch_selection. Received: {type(model).__name__}"
    )


def text_embedding_of(backbone, text):
    """The selection query `(1, D)` of `text`: its text [CLS] through the
    backbone's text tower (tokenised by `TRIPSTextPreprocessor`) and, when
    the backbone has one, its guidance projection."""
    from keras_trips.data.trips_text_preprocessor import TRIPSTextPreprocessor

    _check_text(text)
    preprocessor = TRIPSTextPreprocessor(
        sequence_length=min(32, backbone.max_sequence_length)
    )
    features = preprocessor([text])
    token_ids = np.asarray(features["token_ids"])
    padding_mask = np.asarray(features["padding_mask"])
    return backbone.selection_query(backbone.encode_text(token_ids, padding_mask)[:, 0])


def _check_text(text):
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"`text` must be a non-empty string. Received: {text!r}")


def _grid_shape(encoder):
    if hasattr(encoder, "grid_shape"):
        return tuple(encoder.grid_shape)
    return tuple(encoder.patch_embedding.grid_shape)


def _checked_image(encoder, image):
    """`image` as float32 in [0, 1], or a ValueError naming the shape needed."""
    image = np.asarray(image)
    expected = tuple(encoder.image_shape)
    if image.shape != expected:
        raise ValueError(
            f"`image` must have shape {expected} (height, width, channels), the "
            f"model's image size. Received shape: {image.shape}"
        )
    if image.dtype == np.uint8:
        return image.astype("float32") / 255.0
    return image.astype("float32")


def _model_images(image, preprocess):
    if preprocess == "clip":
        image = (image - np.asarray(CLIP_MEAN, "float32")) / np.asarray(
            CLIP_STD, "float32"
        )
    elif callable(preprocess):
        image = np.asarray(preprocess(image), "float32")
    elif preprocess is not None:
        raise ValueError(
            f"`preprocess` must be 'clip', None or a callable. Received: {preprocess!r}"
        )
    return image[None]


def kept_patches(provenance):
    """Patches that are still tokens of their own: `(N,)` bool from a
    provenance map `(T, N)` (their rows are one-hot)."""
    provenance = np.asarray(provenance)
    single = (provenance.max(axis=1) == 1.0) & ((provenance > 0).sum(axis=1) == 1)
    kept = np.zeros(provenance.shape[1], bool)
    kept[provenance[single].argmax(axis=1)] = True
    return kept


def fusion_weights(provenance):
    """Per patch `(N,)`, its weight in the tokens that are fusions of
    several patches (zero for kept patches)."""
    provenance = np.asarray(provenance)
    single = (provenance.max(axis=1) == 1.0) & ((provenance > 0).sum(axis=1) == 1)
    return provenance[~single].sum(axis=0)


def selection_maps(
    model,
    image,
    text_embedding=None,
    guidance="text",
    keep_rate=None,
    preprocess="clip",
):
    """What each selection stage did to one image, on its patch grid.

    Args:
        model: a `TRIPSVisionEncoder` or `TRIPSSelectingEncoder` (see
            `vision_model_of` for the others).
        image: `(H, W, C)` in [0, 1] (float) or uint8, the model's size.
        text_embedding: `(D,)` or `(1, D)` guiding text, or `None`.
        guidance: `"text"`, `"image"`, `"text+image"` or `"random"`.
        keep_rate: overrides the keep rate(s).
        preprocess: `"clip"` (CLIP mean/std, as `keras_trips.data`), `None`
            or a callable applied to the image before the model.

    Returns:
        One dict per stage: `"block"`, `"keep_rate"`, `"kept"` `(rows,
        columns)` bool (patches that are still their own token),
        `"fusion_weights"` `(rows, columns)` and `"scores"` `(rows,
        columns)` (the stage's scores spread onto the patches).
    """
    encoder, _ = vision_model_of(model)
    image = _checked_image(encoder, image)
    inputs = {"images": _model_images(image, preprocess)}
    if text_embedding is not None:
        inputs["text_embedding"] = np.reshape(
            ops.convert_to_numpy(text_embedding), (1, -1)
        ).astype("float32")
    grid = _grid_shape(encoder)
    stages = encoder.selection_trace(inputs, keep_rate=keep_rate, guidance=guidance)
    maps = []
    for stage in stages:
        provenance = ops.convert_to_numpy(stage["provenance"])[0]
        maps.append(
            {
                "block": stage["block"],
                "keep_rate": stage["keep_rate"],
                "kept": kept_patches(provenance).reshape(grid),
                "fusion_weights": fusion_weights(provenance).reshape(grid),
                "scores": ops.convert_to_numpy(stage["scores"])[0].reshape(grid),
            }
        )
    return maps


def _draw_selection(axis, image, maps, grid):
    """The image, fused patches darkened, each stage's kept patches outlined.
    Outline rectangles carry `gid="kept-stage-<s>"` (s from 1)."""
    from matplotlib.patches import Rectangle

    height, width = image.shape[:2]
    cell_height, cell_width = height / grid[0], width / grid[1]
    extent = (0, width, height, 0)
    axis.imshow(image, extent=extent, interpolation="nearest")
    last = maps[-1]
    weights = np.where(last["kept"], 0.0, last["fusion_weights"])
    relative = weights / weights.max() if weights.max() > 0 else weights
    # A black veil over the fused patches: lighter where they weigh more.
    veil = np.zeros((*grid, 4))
    veil[..., 3] = np.where(last["kept"], 0.0, 0.82 - 0.5 * relative)
    axis.imshow(veil, extent=extent, interpolation="nearest")
    for stage, stage_map in enumerate(maps):
        inset = 0.12 * stage * min(cell_height, cell_width)
        for row, column in zip(*np.nonzero(stage_map["kept"]), strict=True):
            axis.add_patch(
                Rectangle(
                    (column * cell_width + inset, row * cell_height + inset),
                    cell_width - 2 * inset,
                    cell_height - 2 * inset,
                    fill=False,
                    edgecolor=STAGE_COLOURS[stage % len(STAGE_COLOURS)],
                    linewidth=0.8 + 0.5 * stage,
                    gid=f"kept-stage-{stage + 1}",
                )
            )
    axis.set_xlim(0, width)
    axis.set_ylim(height, 0)


def _draw_scores(axis, image, scores):
    """The scores over a grey image, scaled from their minimum to maximum."""
    height, width = image.shape[:2]
    extent = (0, width, height, 0)
    axis.imshow(image.mean(axis=-1), cmap="gray", extent=extent, vmin=0, vmax=1)
    axis.imshow(
        scores,
        cmap="inferno",
        alpha=0.65,
        extent=extent,
        interpolation="nearest",
        vmin=scores.min(),
        vmax=scores.max(),
    )


def plot_selection(
    model,
    image,
    text=None,
    text_embedding=None,
    keep_rate=None,
    guidances=GUIDANCES,
    preprocess="clip",
    path=None,
    dpi=DPI,
):
    """A picture of what selection keeps, for several guidance modes.

    Args:
        model: a `TRIPSPretrainer`, `TRIPSBackbone`, `TRIPSVisionEncoder` or a
            `with_patch_selection` model.
        image: `(H, W, C)`, the model's image size, float in [0, 1] or uint8.
        text: the caption. With a pretrainer or backbone it is embedded by
            the backbone's text tower (unless `text_embedding` is given);
            otherwise it is only the picture's caption.
        text_embedding: `(D,)` or `(1, D)`, the guiding text [CLS] for a bare
            vision encoder. Without one (and no text tower) text guidance is
            not drawn, and the caption says so.
        keep_rate: overrides the model's keep rate(s).
        guidances: the columns, from `"text"`, `"image"`, `"text+image"`,
            `"random"`.
        preprocess: see `selection_maps`.
        path: where to write the PNG, or `None`.
        dpi: dots per inch; the size is `figure_size_px(columns, dpi)`.

    Returns:
        The matplotlib `Figure` (close it with `matplotlib.pyplot.close`).
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    encoder, backbone = vision_model_of(model)
    image = _checked_image(encoder, image)
    if text is not None:
        _check_text(text)
    if text_embedding is None and text is not None and backbone is not None:
        text_embedding = text_embedding_of(backbone, text)
    note = ""
    guidances = tuple(guidances)
    if text_embedding is None and "text" in guidances:
        guidances = tuple(g for g in guidances if g != "text")
        note = "no text embedding for this model: text guidance not drawn"
        warnings.warn(f"plot_selection: {note}.", stacklevel=2)
    if not guidances:
        raise ValueError("`guidances` must name at least one guidance mode.")

    all_maps = {
        guidance: selection_maps(
            encoder, image, text_embedding, guidance, keep_rate, preprocess
        )
        for guidance in guidances
    }
    first = all_maps[guidances[0]]
    if not first:
        raise ValueError(
            "The model selects nothing at these keep rates (all 1.0, or no "
            "selection layers): there is nothing to draw."
        )
    grid = _grid_shape(encoder)
    width_px, height_px = figure_size_px(len(guidances), dpi)
    total_height = height_px / dpi
    figure = plt.figure(figsize=(width_px / dpi, total_height), dpi=dpi)
    layout = figure.add_gridspec(
        2,
        len(guidances),
        left=0.02,
        right=0.98,
        top=1.0 - CAPTION_INCHES / total_height,
        bottom=LEGEND_INCHES / total_height,
        wspace=0.05,
        hspace=0.1,
    )
    for column, guidance in enumerate(guidances):
        maps = all_maps[guidance]
        selection_axis = figure.add_subplot(layout[0, column])
        _draw_selection(selection_axis, image, maps, grid)
        selection_axis.set_title(GUIDANCE_TITLES.get(guidance, guidance), fontsize=10)
        selection_axis.set_gid(f"selection-{guidance}")
        score_axis = figure.add_subplot(layout[1, column])
        _draw_scores(score_axis, image, maps[0]["scores"])
        score_axis.set_gid(f"scores-{guidance}")
        score_axis.text(
            0.02,
            0.02,
            f"scores at block {maps[0]['block']}",
            transform=score_axis.transAxes,
            fontsize=8,
            color="white",
            bbox={"facecolor": "black", "alpha": 0.55, "edgecolor": "none"},
        )
        for axis in (selection_axis, score_axis):
            axis.set_xticks([])
            axis.set_yticks([])

    def inches_from_top(inches):
        return 1.0 - inches / total_height

    caption = f'"{text}"' if text is not None else "(no caption)"
    figure.text(
        0.5,
        inches_from_top(0.22),
        caption,
        ha="center",
        va="center",
        fontsize=13,
        fontweight="bold",
    )
    num_patches = grid[0] * grid[1]
    counts = " \u2192 ".join(
        [str(num_patches)] + [str(int(stage["kept"].sum())) for stage in first]
    )
    rates = ", ".join(
        f"{stage['keep_rate']:g} at block {stage['block']}" for stage in first
    )
    details = f"keep rate {rates}; patches kept {counts} ({guidances[0]} guidance)"
    if note:
        details += f"; {note}"
    figure.text(
        0.5,
        inches_from_top(0.52),
        details,
        ha="center",
        va="center",
        fontsize=9,
        color="#333333",
    )
    legend_y = 0.5 * LEGEND_INCHES / total_height
    x = 0.02
    for stage, stage_map in enumerate(first):
        figure.text(
            x,
            legend_y,
            f"kept after block {stage_map['block']}",
            fontsize=8.5,
            va="center",
            color=STAGE_COLOURS[stage % len(STAGE_COLOURS)],
            bbox={"facecolor": "#202020", "edgecolor": "none", "pad": 2.5},
        )
        x += 1.45 / (width_px / dpi)
    figure.text(
        x,
        legend_y,
        "darkened: fused (lighter = more weight in the fused token)"
        "  \u2022  heat-map: scores, low to high",
        fontsize=8,
        va="center",
        color="#333333",
    )
    if path is not None:
        directory = os.path.dirname(path)
        if directory:
            os.makedirs(directory, exist_ok=True)
        figure.savefig(path, dpi=dpi)
    return figure


def write_selection_examples(
    model, images, texts, out_dir, keep_rate=None, preprocess="clip", prefix="selection"
):
    """Writes one `plot_selection` PNG per (image, caption) pair.

    Meant for the end of a training run: captions that name one object show
    whether the text steers selection to it.

    Args:
        model: a `TRIPSPretrainer` or `TRIPSBackbone` (or a vision encoder,
            which then gets image and random guidance only).
        images: `(n, H, W, C)` images, float in [0, 1] or uint8.
        texts: `n` captions.
        out_dir: folder for `<prefix>_<i>.png`.
        keep_rate: overrides the model's keep rate(s).
        preprocess: see `selection_maps`.
        prefix: file name prefix.

    Returns:
        The paths written.
    """
    import matplotlib.pyplot as plt

    if len(images) != len(texts):
        raise ValueError(
            f"`images` and `texts` must pair up. Received {len(images)} images "
            f"and {len(texts)} texts."
        )
    paths = []
    for index, (image, text) in enumerate(zip(images, texts, strict=True)):
        path = os.path.join(out_dir, f"{prefix}_{index:02d}.png")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the caption says it already
            figure = plot_selection(
                model,
                image,
                text,
                keep_rate=keep_rate,
                preprocess=preprocess,
                path=path,
            )
        plt.close(figure)
        paths.append(path)
    return paths

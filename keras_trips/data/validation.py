"""Reading annotation files and filtering out broken rows and images.

A long run must not stop on one bad row or image: readers check every row and
every image header when the annotation file is read, drop the offenders, and
report how many were dropped (with the first few) through `warnings.warn`.
A file that is missing, empty or unparseable is an error up front.
"""

import collections
import json
import os
import warnings
from concurrent.futures import ThreadPoolExecutor

from PIL import Image

# Formats that `tf.io.decode_image` decodes.
DECODABLE_FORMATS = ("JPEG", "PNG", "GIF", "BMP")
VALIDATION_MODES = ("header", "full", None)
_MAX_LISTED_OFFENDERS = 5


def read_json(path):
    """Parse a JSON file, raising a clear error naming the file when it is
    missing, empty or not valid JSON."""
    text = _read_text(path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"Annotation file {path} is not valid JSON: {error}") from None


def read_json_lines(path):
    """Parse a JSON-lines file into a list of rows (blank lines ignored).

    Lines that do not parse are returned as `None` so the caller counts them
    as malformed rows; a file where no line parses is an error.
    """
    rows = []
    for line in _read_text(path).splitlines():
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            rows.append(None)
    if all(row is None for row in rows):
        raise ValueError(f"Annotation file {path} has no parseable JSON line.")
    return rows


def _read_text(path):
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Annotation file {path} does not exist.")
    with open(path, encoding="utf-8") as file:
        text = file.read()
    if not text.strip():
        raise ValueError(f"Annotation file {path} is empty.")
    return text


def default_image_root(annotation_file, image_root=None):
    """`image_root`, or by default the annotation file's folder."""
    if image_root is None:
        return os.path.dirname(os.path.abspath(annotation_file))
    return os.fspath(image_root)


def require_list(data, path, key=None):
    """Return `data` (or `data[key]`) when it is a non-empty list, else raise."""
    if key is not None:
        if not isinstance(data, dict) or key not in data:
            raise ValueError(f"Annotation file {path} has no top-level '{key}' list.")
        data = data[key]
    if not isinstance(data, list):
        raise ValueError(f"Annotation file {path} does not hold a JSON list.")
    if not data:
        raise ValueError(f"Annotation file {path} holds no annotations.")
    return data


class SkipLog:
    """Counts dropped rows by reason and reports them in one warning.

    Args:
        source: str. What is being read (the annotation file), for messages.

    Example:
    ```python
    skips = SkipLog("captions.json")
    skips.add("row 3", "missing 'caption'")
    skips.report(total=10)  # warns: "Skipped 1 of 10 rows ..."
    ```
    """

    def __init__(self, source):
        self.source = source
        self.offenders = []

    def add(self, row, reason):
        self.offenders.append((row, reason))

    @property
    def count(self):
        return len(self.offenders)

    def report(self, total):
        """Warn once with the count per reason and the first offenders; raise
        when nothing usable is left."""
        if not self.offenders:
            return
        reasons = collections.Counter(
            reason.split(":")[0] for _, reason in self.offenders
        )
        summary = ", ".join(f"{n} {reason}" for reason, n in reasons.most_common())
        first = "; ".join(
            f"{row}: {reason}" for row, reason in self.offenders[:_MAX_LISTED_OFFENDERS]
        )
        message = (
            f"Skipped {self.count} of {total} rows of {self.source} ({summary}). "
            f"First offenders: {first}"
        )
        if self.count >= total:
            raise ValueError(f"No usable rows left. {message}")
        warnings.warn(message, stacklevel=3)


def image_problem(path, mode="header"):
    """Return why the image at `path` cannot be decoded, or None if it can.

    `mode="header"` opens the file header only (cheap, catches missing,
    empty and non-image files); `"full"` also decodes the pixels (catches
    truncated files); `None` only checks that the file exists.
    """
    if not os.path.isfile(path):
        return f"missing image: {path}"
    if mode is None:
        return None
    try:
        with Image.open(path) as image:
            if image.format not in DECODABLE_FORMATS:
                return f"unsupported image format: {image.format} {path}"
            if mode == "full":
                image.load()
    except Exception as error:
        return f"corrupt image: {path} ({type(error).__name__})"
    return None


def image_problems(paths, mode="header", num_threads=16):
    """Run `image_problem` over many paths in a thread pool (I/O bound)."""
    if mode not in VALIDATION_MODES:
        raise ValueError(
            f"validate_images must be one of {VALIDATION_MODES}, got {mode!r}"
        )
    unique_paths = list(dict.fromkeys(paths))
    with ThreadPoolExecutor(num_threads) as pool:
        problems = pool.map(lambda p: image_problem(p, mode), unique_paths)
    return dict(zip(unique_paths, problems, strict=True))


def image_sizes(paths, num_threads=16):
    """Return {path: (width, height)} read from the image headers."""

    def size(path):
        with Image.open(path) as image:
            return image.size

    unique_paths = list(dict.fromkeys(paths))
    with ThreadPoolExecutor(num_threads) as pool:
        return dict(zip(unique_paths, pool.map(size, unique_paths), strict=True))


def keep_rows_with_good_images(rows, skips, mode="header"):
    """Drop rows whose image (`row["image"]`, a path or list of paths) is
    missing or undecodable, logging each in `skips`; return the rest."""
    paths = [p for row in rows for p in _as_list(row["image"])]
    problems = image_problems(paths, mode)
    kept = []
    for row in rows:
        problem = next(
            (problems[p] for p in _as_list(row["image"]) if problems[p]), None
        )
        if problem is None:
            kept.append(row)
        else:
            skips.add(row["row_id"], problem)
    return kept


def _as_list(paths):
    return [paths] if isinstance(paths, str) else list(paths)

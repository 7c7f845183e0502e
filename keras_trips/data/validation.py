"""Reading annotation files and filtering out broken rows and images.

A long run must not stop on one bad row or image, and must not lose one
silently: readers check every row and every image when the annotation file
is read, drop the offenders, and report how many were dropped, by reason
(with the first few), through `warnings.warn`. By default every image is
decoded once in full, so a truncated file is caught here and not in the
middle of training; the verdict is cached per file (path, size and
modification time), so the next run pays only a `stat` per image. The
input pipeline then drops nothing: what reaches it decodes. A file that is
missing, empty, unparseable or not UTF-8 is an error up front.
"""

import collections
import contextlib
import json
import os
import sqlite3
import warnings
from concurrent.futures import ThreadPoolExecutor

from PIL import Image

from keras_trips.utils.cache import cache_root

# Formats that `tf.io.decode_image` decodes.
DECODABLE_FORMATS = ("JPEG", "PNG", "GIF", "BMP")
VALIDATION_MODES = ("full", "header", None)
_MAX_LISTED_OFFENDERS = 5
# Errors that a malformed row raises when a reader picks it apart.
ROW_ERRORS = (AttributeError, KeyError, TypeError, ValueError, IndexError)
_BYTE_ORDER_MARKS = {
    b"\xff\xfe\x00\x00": "UTF-32",
    b"\x00\x00\xfe\xff": "UTF-32",
    b"\xff\xfe": "UTF-16",
    b"\xfe\xff": "UTF-16",
}


def read_json(path):
    """Parse a JSON file, raising a clear error naming the file when it is
    missing, empty, not UTF-8 or not valid JSON."""
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
    """The UTF-8 text of an annotation file (a UTF-8 byte-order mark is
    allowed); any other encoding is an error that names the file."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Annotation file {path} does not exist.")
    with open(path, "rb") as file:
        content = file.read()
    for mark, encoding in _BYTE_ORDER_MARKS.items():
        if content.startswith(mark):
            raise ValueError(
                f"Annotation file {path} is {encoding} text (it starts with a "
                f"{encoding} byte-order mark); save it as UTF-8."
            )
    if b"\x00" in content:
        raise ValueError(
            f"Annotation file {path} holds NUL bytes: it is binary or UTF-16/32 "
            "text without a byte-order mark; save it as UTF-8."
        )
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise ValueError(
            f"Annotation file {path} is not UTF-8 text: byte "
            f"{content[error.start]:#04x} at offset {error.start} is invalid "
            "(Latin-1 or another legacy encoding?); save it as UTF-8."
        ) from None
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


class MalformedRow(ValueError):
    """A row that a reader cannot use; the message says why."""


def text_field(item, key):
    """`item[key]` when it is a non-blank string, else `MalformedRow`."""
    value = _field(item, key)
    if not isinstance(value, str) or not value.strip():
        raise MalformedRow(f"'{key}' must be a non-empty string, got {value!r:.40}")
    return value


def texts_field(item, key):
    """`item[key]` as a non-empty list of non-blank strings (a single
    string is a list of one), else `MalformedRow`."""
    value = _field(item, key)
    texts = [value] if isinstance(value, str) else value
    if (
        not isinstance(texts, list)
        or not texts
        or not all(isinstance(t, str) and t.strip() for t in texts)
    ):
        raise MalformedRow(
            f"'{key}' must be a non-empty string or list of them, got {value!r:.40}"
        )
    return texts


def _field(item, key):
    if not isinstance(item, dict):
        raise MalformedRow(f"not a JSON object: {item!r:.40}")
    if key not in item:
        raise MalformedRow(f"no '{key}'")
    return item[key]


def parse_rows(items, parse, skips, label="row", first_index=0):
    """`parse(item)` for each item, as rows `{"row_id", **parsed}`.

    An item whose parsing raises (`MalformedRow`, or a lookup or type error
    of a row that is not what the format says) is skipped and logged in
    `skips` as a malformed row, never raised.
    """
    rows = []
    for index, item in enumerate(items, start=first_index):
        row_id = f"{label} {index}"
        try:
            rows.append({"row_id": row_id, **parse(item)})
        except MalformedRow as error:
            skips.add(row_id, f"malformed row: {error}")
        except ROW_ERRORS as error:
            skips.add(row_id, f"malformed row: {type(error).__name__} {error}")
    return rows


class SkipLog:
    """Counts dropped rows by reason and reports them in one warning.

    Args:
        source: str. What is being read (the annotation file), for messages.

    Example:
    ```python
    skips = SkipLog("captions.json")
    skips.add("row 3", "malformed row: no 'caption'")
    skips.report(total=10, kept=9)  # warns: "Skipped 1 of 10 rows ..."
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

    def counts(self):
        """`{reason: number of rows}`, the reason being the text before the
        first colon ("missing image", "corrupt image", "malformed row")."""
        return dict(
            collections.Counter(reason.split(":")[0] for _, reason in self.offenders)
        )

    def report(self, total, kept):
        """Warn once with the count per reason and the first offenders;
        raise when no row is kept.

        Args:
            total: int. Rows read.
            kept: int. Rows left for the dataset.
        """
        if not self.offenders:
            if not kept:
                raise ValueError(f"No usable rows in {self.source}.")
            return
        counts = sorted(self.counts().items(), key=lambda item: -item[1])
        summary = ", ".join(f"{n} {reason}" for reason, n in counts)
        first = "; ".join(
            f"{row}: {reason}" for row, reason in self.offenders[:_MAX_LISTED_OFFENDERS]
        )
        message = (
            f"Skipped {self.count} of {total} rows of {self.source} ({summary}). "
            f"First offenders: {first}"
        )
        if not kept:
            raise ValueError(f"No usable rows left. {message}")
        warnings.warn(message, stacklevel=3)


def image_problem(path, mode="full"):
    """Return why the image at `path` cannot be decoded, or None if it can.

    `mode="full"` decodes the pixels (catches truncated and corrupt data);
    `"header"` opens the file header only (catches missing, empty and
    non-image files, not truncated ones); `None` only checks that the file
    exists.
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
        return f"corrupt image: {path} ({type(error).__name__}: {error})"
    return None


def image_problems(paths, mode="full", num_threads=16):
    """`{path: image_problem(path, mode)}` for the distinct paths, checked in
    a thread pool; full verdicts come from (and go to) the cache."""
    if mode not in VALIDATION_MODES:
        raise ValueError(
            f"validate_images must be one of {VALIDATION_MODES}, got {mode!r}"
        )
    unique_paths = list(dict.fromkeys(paths))
    cache = _VerdictCache(unique_paths) if mode == "full" else None
    known = cache.lookup() if cache else {}
    unknown = [path for path in unique_paths if path not in known]
    with ThreadPoolExecutor(num_threads) as pool:
        found = dict(zip(unknown, pool.map(lambda p: image_problem(p, mode), unknown)))
    if cache:
        cache.store(found)
    return {path: known.get(path, found.get(path)) for path in unique_paths}


class _VerdictCache:
    """Full-decode verdicts of `paths`, keyed by path and valid while the
    file's size and modification time are unchanged, kept in
    `<cache_root()>/image_checks.sqlite`.

    A cache that cannot be opened or written (read-only home, locked) only
    costs the decoding again. Missing files are never cached.
    """

    _CHUNK = 500  # paths per query, under SQLite's parameter limit

    def __init__(self, paths):
        self.file = os.path.join(cache_root(), "image_checks.sqlite")
        self.stats = {}
        for path in paths:
            try:
                stat = os.stat(path)
            except OSError:
                continue
            self.stats[path] = (stat.st_size, stat.st_mtime_ns)

    @contextlib.contextmanager
    def _connect(self):
        os.makedirs(os.path.dirname(self.file), exist_ok=True)
        connection = sqlite3.connect(self.file, timeout=30)
        # The outer block closes the connection, the inner one commits.
        with contextlib.closing(connection), connection:
            connection.execute(
                "CREATE TABLE IF NOT EXISTS verdicts (path TEXT PRIMARY KEY, "
                "size INTEGER, mtime_ns INTEGER, problem TEXT)"
            )
            yield connection

    def lookup(self):
        """`{path: problem}` of the paths with a still-valid verdict."""
        paths = list(self.stats)
        found = {}
        try:
            with self._connect() as connection:
                for start in range(0, len(paths), self._CHUNK):
                    chunk = paths[start : start + self._CHUNK]
                    query = (
                        "SELECT path, size, mtime_ns, problem FROM verdicts "
                        f"WHERE path IN ({', '.join('?' * len(chunk))})"
                    )
                    for path, size, mtime_ns, problem in connection.execute(
                        query, chunk
                    ):
                        if self.stats[path] == (size, mtime_ns):
                            found[path] = problem
        except (OSError, sqlite3.Error):
            return {}
        return found

    def store(self, problems):
        """Record the verdicts `{path: problem}` of files that exist."""
        rows = [
            (path, *self.stats[path], problem)
            for path, problem in problems.items()
            if path in self.stats
        ]
        try:
            with self._connect() as connection:
                connection.executemany(
                    "INSERT OR REPLACE INTO verdicts VALUES (?, ?, ?, ?)", rows
                )
        except (OSError, sqlite3.Error):
            pass


def image_sizes(paths, num_threads=16):
    """Return {path: (width, height)} read from the image headers."""

    def size(path):
        with Image.open(path) as image:
            return image.size

    unique_paths = list(dict.fromkeys(paths))
    with ThreadPoolExecutor(num_threads) as pool:
        return dict(zip(unique_paths, pool.map(size, unique_paths), strict=True))


def keep_rows_with_good_images(rows, skips, mode="full"):
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

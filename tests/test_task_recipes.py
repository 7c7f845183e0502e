"""The task recipes end to end: a micro backbone, tiny scenes, 2 steps."""

import json
import os

import keras
import numpy as np
import pytest
from backend_utils import end_to_end
from pretraining_utils import MICRO
from test_recipes import RECIPES, load_recipe

from keras_trips.models import TRIPSBackbone

pytestmark = [pytest.mark.usefixtures("scenes_cache"), end_to_end]

METRICS = {
    "vqa": "vqa_accuracy",
    "nlvr2": "accuracy",
    "grounding": "accuracy_iou_0.5",
    "captioning": "CIDEr",
}


@pytest.fixture(autouse=True)
def recipes_on_path(monkeypatch):
    """The task recipes import their shared front, `task_finetuning`, as a
    script's neighbour."""
    monkeypatch.syspath_prepend(str(RECIPES))


@pytest.fixture(scope="module")
def micro_backbone(tmp_path_factory):
    """A saved micro backbone on the tokenizer's vocabulary, 32 px."""
    path = str(tmp_path_factory.mktemp("init") / "backbone.keras")
    TRIPSBackbone(**{**MICRO, "vocabulary_size": 30522}).save(path)
    return path


def arguments(init_from, output_dir, *extra):
    return [
        f"--init-from={init_from}",
        "--num-scenes=64",
        "--num-eval-scenes=8",
        "--batch-size=8",
        "--eval-batch-size=4",
        "--steps=2",
        "--log-every=2",
        "--warmup-steps=1",
        f"--output-dir={output_dir}",
        *extra,
    ]


@pytest.mark.parametrize("task", ["nlvr2", "grounding", "captioning"])
def test_each_recipe_reports_its_metric_beside_its_baseline(
    task, micro_backbone, tmp_path
):
    extra = ["--max-length=4"] if task == "captioning" else []
    summary = load_recipe(f"finetune_{task}").main(
        arguments(micro_backbone, tmp_path, *extra)
    )
    metric = METRICS[task]
    assert summary["task"] == task and summary["train_steps"] == 2
    assert metric in summary["results"] and metric in summary["baseline"]
    assert summary["results"]["images_per_s"] > 0
    assert summary["eval_examples"] > 0
    with open(tmp_path / "results.json") as file:
        assert json.load(file)["results"][metric] == pytest.approx(
            summary["results"][metric]
        )
    assert os.path.isfile(summary["model"])


def test_vqa_at_a_higher_resolution_with_a_keep_rate_sweep(micro_backbone, tmp_path):
    # From a preset directory, as the pre-training recipe writes one.
    preset = str(tmp_path / "preset")
    keras.saving.load_model(micro_backbone).save_to_preset(preset)
    summary = load_recipe("finetune_vqa").main(
        arguments(preset, tmp_path, "--image-size=48", "--sweep-keep-rates")
    )
    assert summary["image_size"] == 48
    rows = summary["keep_rate_sweep"]
    assert [row["keep_rate"] for row in rows] == [1.0, 0.9, 0.7, 0.5, 0.3]
    assert all(0.0 <= row["vqa_accuracy"] <= 1.0 for row in rows)
    assert all(row["images_per_s"] > 0 for row in rows)
    assert os.path.getsize(summary["keep_rate_curve"]) > 0
    # The sweep leaves the model's own keep rate as it was.
    assert summary["keep_rate"] == [0.5]
    # The fine-tuned model reloads for another evaluation.
    again = load_recipe("finetune_vqa").main(
        arguments(summary["model"], tmp_path / "again", "--steps=0")
    )
    assert again["train_steps"] == 0
    np.testing.assert_allclose(
        again["results"]["vqa_accuracy"], summary["results"]["vqa_accuracy"]
    )


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--data=nlvr2"], "needs --train-annotations"),
        (["--steps=-1"], "--steps must be"),
        (["--init-from=missing.keras"], "no such file"),
    ],
)
def test_bad_options_are_reported(argv, message, capsys):
    with pytest.raises(SystemExit):
        load_recipe("finetune_nlvr2").main(argv)
    assert message in capsys.readouterr().err

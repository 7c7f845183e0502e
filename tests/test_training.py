"""keras_trips.training's TrainingConfig and the recipes' options over it:
validation fails before any work."""

import json

import keras
import numpy as np
import pytest
from PIL import Image
from test_recipes import load_recipe

from keras_trips import training

training_options = load_recipe("training_options")


def parse(*argv):
    """The `TrainingConfig` of recipe options `argv`."""
    parser = training_options.training_parser("test", "runs/test")
    return training_options.parse_training_options(parser, list(argv))[1]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--model", "huge"], "invalid choice: 'huge'"),
        (["--backbone-overrides", '{"width": 3}'], "unknown TRIPSBackbone arguments"),
        (["--keep-rate", "1.5"], "--keep-rate: `keep_rate` must be in (0, 1]"),
        (["--keep-rate", "0"], "must be in (0, 1]"),
        (["--keep-rate", "0.7,x"], "must be a number in (0, 1]"),
        (["--selection-layers", "1,a"], "comma list of integers"),
        (["--keep-rate", "0.5,0.7", "--keep-rate-warmup", "10"], "one keep rate"),
        (["--batch-size", "0"], "--batch-size must be at least 1"),
        (["--batch-size", "1"], "at least 2 pairs per device"),
        (["--steps", "5", "--grad-accumulation", "2"], "not a multiple of"),
        (
            [
                "--data-format",
                "albef",
                "--annotations",
                "/no/such.json",
                "--steps",
                "5",
            ],
            "no such file: /no/such.json",
        ),
        (["--data-format", "coco"], "needs --annotations"),
        (
            ["--data-format", "tfrecord", "--annotations", __file__],
            "needs --steps-per-epoch or --steps",
        ),
        (
            ["--data-format", "tfrecord", "--annotations", "/no/*.tfrecord"],
            "no TFRecord",
        ),
        (["--annotations", "x.json"], "need --data-format"),
    ],
)
def test_bad_arguments_fail_with_their_message(argv, message, capsys):
    with pytest.raises(SystemExit):
        parse(*argv)
    assert message in capsys.readouterr().err


def test_data_parallel_batch_must_divide_over_the_devices(capsys, monkeypatch):
    if keras.backend.backend() == "torch":
        with pytest.raises(SystemExit):
            parse("--data-parallel")
        assert "torch trains on one device" in capsys.readouterr().err
        return
    monkeypatch.setattr(
        training.training_config,
        "data_parallel_devices",
        lambda: ["cpu:0", "cpu:1", "cpu:2"],
    )
    with pytest.raises(SystemExit):
        parse("--data-parallel", "--batch-size", "32")
    assert "not divisible by the 3 devices" in capsys.readouterr().err
    assert parse("--data-parallel", "--batch-size", "33").devices == [
        "cpu:0",
        "cpu:1",
        "cpu:2",
    ]


def test_config_file_sets_options_and_the_command_line_wins(tmp_path, capsys):
    config = tmp_path / "run.json"
    config.write_text(json.dumps({"keep-rate": "0.5", "batch_size": 16, "epochs": 7}))
    parsed = parse("--config", str(config), "--epochs", "2")
    assert (parsed.keep_rate, parsed.batch_size, parsed.epochs) == (0.5, 16, 2)
    assert parsed.image_size == 64  # the tiny model's

    config.write_text(json.dumps({"keep_rat": 0.5}))
    with pytest.raises(SystemExit):
        parse("--config", str(config))
    assert "unknown option 'keep_rat'" in capsys.readouterr().err


@pytest.mark.parametrize(
    "options, message",
    [
        ({"model": "huge"}, "argument --model: invalid choice: 'huge'"),
        ({"epochs": "two"}, "argument --epochs: invalid int value: 'two'"),
        ({"batch_size": 2.5}, "argument --batch-size: invalid int value: '2.5'"),
        ({"schedule": "linear"}, "argument --schedule: invalid choice: 'linear'"),
        ({"keep_rate": [0.5, 2]}, "argument --keep-rate: `keep_rate` must be in"),
        ({"momentum": "yes"}, "--momentum is a switch: true or false"),
        ({"epochs": 0}, "--epochs must be at least 1"),
    ],
)
def test_config_file_values_get_the_command_lines_validation(
    options, message, tmp_path, capsys
):
    config = tmp_path / "run.json"
    config.write_text(json.dumps(options))
    with pytest.raises(SystemExit):
        parse("--config", str(config))
    error = capsys.readouterr().err
    assert message in error
    if "argument" in message:  # the parser's own checks name the file
        assert f"--config {config}" in error


def test_config_file_lists_and_switches_are_options(tmp_path):
    config = tmp_path / "run.json"
    overrides = {"hidden_dim": 64}
    config.write_text(
        json.dumps(
            {
                "keep-rate": [0.5, 0.7],
                "selection_layers": [1, 3],
                "momentum": True,
                "mixed_precision": False,
                "backbone_overrides": overrides,
            }
        )
    )
    parsed = parse("--config", str(config))
    assert parsed.keep_rate == (0.5, 0.7)
    assert parsed.selection_layers == (1, 3)
    assert parsed.momentum and not parsed.mixed_precision
    assert parsed.backbone_config["hidden_dim"] == 64


def test_training_config_validates_without_a_command_line(tmp_path):
    config = training.TrainingConfig(keep_rate=[0.5], selection_layers=[2], steps=4)
    assert config.backbone_config["keep_rate"] == 0.5
    assert config.backbone_config["selection_layers"] == (2,)
    assert config.backbone_config["image_shape"] == (64, 64, 3)
    with pytest.raises(training.TrainingConfigError, match="`batch_size` must be at"):
        training.TrainingConfig(batch_size=0)
    with pytest.raises(
        ValueError, match=r"`keep_rate`: `keep_rate` must be in \(0, 1\]"
    ):
        training.TrainingConfig(keep_rate=(0.5, 1.5))
    with pytest.raises(ValueError, match="`schedule` must be one of"):
        training.TrainingConfig(schedule="linear")
    with pytest.raises(ValueError, match="`data_format` coco needs `annotations`"):
        training.TrainingConfig(data_format="coco")
    with pytest.raises(ValueError, match=r"`text_length` must be between 2 and .* 32"):
        training.TrainingConfig(text_length=40)
    with pytest.raises(ValueError, match=r"`min_crop_area` must be in \(0, 1\]"):
        training.TrainingConfig(min_crop_area=0.0)
    with pytest.raises(ValueError, match=r"`itc_only_fraction` must be in \[0, 1\)"):
        training.TrainingConfig(itc_only_fraction=1.0)
    with pytest.raises(ValueError, match=r"`learning_rate_floor` must be in \[0, 1\)"):
        training.TrainingConfig(learning_rate_floor=1.0)
    with pytest.raises(ValueError, match="`eval_phrases`: no such file: /no/refs"):
        training.TrainingConfig(eval_phrases="/no/refs.json")


def test_small_preset_freezes_its_pretrained_text_tower_by_default(tmp_path):
    assert training.TrainingConfig().freeze_text
    assert not training.TrainingConfig(model="tiny").freeze_text
    assert not training.TrainingConfig(freeze_text=False).freeze_text
    assert not parse("--no-freeze-text").freeze_text
    assert parse("--model", "tiny", "--freeze-text").freeze_text
    config = tmp_path / "run.json"
    config.write_text(json.dumps({"freeze_text": False}))
    assert not parse("--config", str(config)).freeze_text


def test_text_length_defaults_to_the_longest_training_caption(tmp_path):
    from PIL import Image

    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    rows = [
        {"image": "a.png", "caption": ["a cow", "a cow above a crown"]},
        {"image": "a.png", "caption": "a bird"},
    ]
    annotations = tmp_path / "train.json"
    annotations.write_text(json.dumps(rows))
    config = training.TrainingConfig(
        model="tiny", data_format="albef", annotations=str(annotations)
    )
    # [CLS] a cow above a crown [SEP]
    assert training.caption_text_length(config) == 7
    given = training.TrainingConfig(
        model="tiny", data_format="albef", annotations=str(annotations), text_length=9
    )
    assert training.caption_text_length(given) == 9


def test_evaluation_files_and_skipping_them(tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    annotations = tmp_path / "train.json"
    annotations.write_text(json.dumps([{"image": "a.png", "caption": "a cow"}]))
    common = dict(model="tiny", data_format="albef", annotations=str(annotations))
    assert training.eval_files(training.TrainingConfig(**common)) == (None, None)
    given = dict(eval_annotations=str(annotations), eval_phrases=str(annotations))
    config = training.TrainingConfig(**common, **given)
    assert training.eval_files(config) == (str(annotations), str(annotations))
    skipped = training.TrainingConfig(**common, **given, skip_evaluation=True)
    assert training.eval_files(skipped) == (None, None)


def test_schedule_from_epochs_or_steps():
    config = parse("--epochs", "3", "--batch-size", "32")
    assert training.training_schedule(config, examples_per_pass=4000) == (125, 3, 375)
    config = parse("--steps", "300", "--steps-per-epoch", "125")
    assert training.training_schedule(config, examples_per_pass=4000) == (125, 3, 300)


def test_recipe_fails_before_building_anything(monkeypatch, capsys):
    def no_work(*args, **kwargs):
        raise AssertionError("work started before the arguments were checked")

    monkeypatch.setattr(training, "training_dataset_fn", no_work)
    monkeypatch.setattr(training, "build_pretrainer", no_work)
    with pytest.raises(SystemExit):
        load_recipe("pretrain").main(["--keep-rate", "2"])
    assert "must be in (0, 1]" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        load_recipe("finetune_retrieval").main(["--init-from", "/no/model.keras"])
    assert "no such file: /no/model.keras" in capsys.readouterr().err


def write_captions(folder, rows):
    """Two-pixel-square PNGs for the rows' images, and the ALBEF file."""
    for row in rows:
        if isinstance(row, dict) and "image" in row:
            Image.fromarray(np.zeros((2, 2, 3), np.uint8)).save(folder / row["image"])
    path = folder / "captions.json"
    path.write_text(json.dumps(rows))
    return str(path)


def test_examples_per_pass_counts_the_rows_the_reader_keeps(tmp_path):
    rows = [
        {"image": "0.png", "caption": "a dog"},
        {"image": "1.png", "caption": ["a cat", "a small cat"]},
        {"image": "2.png"},  # malformed: no caption
        {"image": "3.png", "caption": ["a red circle", "a circle", "red"]},
        "not a row",
    ]
    annotations = write_captions(tmp_path, rows)
    config = training.TrainingConfig(
        data_format="albef", annotations=annotations, batch_size=2
    )
    with pytest.warns(UserWarning, match="Skipped 2 of 5 rows"):
        assert training.examples_per_pass(config, captions="random") == 3
    with pytest.warns(UserWarning, match="Skipped 2 of 5 rows"):
        assert training.examples_per_pass(config, captions="all") == 6


def test_data_smaller_than_one_batch_fails_before_any_work(
    tmp_path, monkeypatch, capsys
):
    def no_work(*args, **kwargs):
        raise AssertionError("work started before the data size was checked")

    monkeypatch.setattr(training, "build_pretrainer", no_work)
    monkeypatch.setattr(training, "fit_resumable", no_work)
    rows = [{"image": f"{i}.png", "caption": "a dog"} for i in range(5)]
    annotations = write_captions(tmp_path, rows)
    argv = ["--data-format=albef", f"--annotations={annotations}", "--batch-size=8"]
    with pytest.raises(SystemExit):
        load_recipe("pretrain").main([*argv, f"--output-dir={tmp_path / 'run'}"])
    assert (
        f"--batch-size 8: the training data ({annotations}) holds 5 usable images, "
        "fewer than one global batch." in capsys.readouterr().err
    )
    # Fine-tuning counts the captions: 5 of them.
    with pytest.raises(SystemExit):
        load_recipe("finetune_retrieval").main(
            [
                *argv,
                f"--eval-annotations={annotations}",
                f"--output-dir={tmp_path / 'finetune'}",
            ]
        )
    assert "holds 5 usable captions" in capsys.readouterr().err

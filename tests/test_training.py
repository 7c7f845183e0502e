"""keras_trips.training: option validation (fails before any work)."""

import json

import keras
import pytest

from keras_trips import training


def parse(*argv):
    parser = training.training_parser("test", "runs/test")
    return training.parse_training_arguments(parser, list(argv))


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
        training.arguments, "data_parallel_devices", lambda: ["cpu:0", "cpu:1", "cpu:2"]
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
    args = parse("--config", str(config), "--epochs", "2")
    assert (args.keep_rates, args.batch_size, args.epochs) == ([0.5], 16, 2)
    assert args.image_size == 64  # the tiny model's

    config.write_text(json.dumps({"keep_rat": 0.5}))
    with pytest.raises(SystemExit):
        parse("--config", str(config))
    assert "unknown option 'keep_rat'" in capsys.readouterr().err


def test_schedule_from_epochs_or_steps():
    args = parse("--epochs", "3", "--batch-size", "32")
    assert training.training_schedule(args, examples_per_pass=4000) == (125, 3, 375)
    args = parse("--steps", "300", "--steps-per-epoch", "125")
    assert training.training_schedule(args, examples_per_pass=4000) == (125, 3, 300)


def test_recipe_fails_before_building_anything(monkeypatch, capsys):
    from test_recipes import load_recipe

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

"""The recipes' command line: options generated from `TrainingConfig`.

Every `keras_trips.training.TrainingConfig` field is an option (`batch_size`
is `--batch-size`), in its group, with its default, choices and help. A
`--config` JSON file of options goes through the same parser, and the
command line overrides it. The parsed options become a `TrainingConfig`;
its errors, and any `TrainingConfigError` of the run's set-up, are reported
as the parser's (the message and `SystemExit`).
"""

import argparse
import contextlib
import dataclasses
import json
import os
import types
import typing

from keras_trips import training
from keras_trips.layers.trips_patch_selection import validate_keep_rate


def keep_rates(text):
    """`"0.5"` -> 0.5; `"0.5,0.7"` -> (0.5, 0.7)."""
    try:
        rates = tuple(validate_keep_rate(rate) for rate in text.split(","))
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return rates[0] if len(rates) == 1 else rates


def integers(text):
    """`"1,3"` -> (1, 3)."""
    try:
        return tuple(int(index) for index in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be a comma list of integers. Received: {text!r}"
        ) from None


# How the command line writes the fields that are not plain numbers or text.
PARSERS = {
    "backbone_overrides": json.loads,
    "keep_rate": keep_rates,
    "selection_layers": integers,
}


def training_parser(description, output_dir):
    """An `argparse.ArgumentParser` with an option per `TrainingConfig`
    field, and `--config`.

    Example:
    ```python
    parser = training_parser("Pre-train TRIPS.", "runs/pretrain")
    args, config = parse_training_options(parser, ["--steps", "10"])
    ```
    """
    parser = argparse.ArgumentParser(
        description=description,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--config",
        help="JSON file of options (keys as the long options, '-' or '_'); "
        "options on the command line override it.",
    )
    groups = {}
    for field in dataclasses.fields(training.TrainingConfig):
        if not field.init:
            continue
        metadata = field.metadata
        group = groups.get(metadata["group"])
        if group is None:
            group = groups[metadata["group"]] = parser.add_argument_group(
                metadata["group"]
            )
        default = (
            field.default_factory()
            if field.default is dataclasses.MISSING
            else field.default
        )
        name = "--" + field.name.replace("_", "-")
        if field.type is bool:
            group.add_argument(name, action="store_true", help=metadata["help"])
        elif _plain_type(field.type) is bool:
            # A switch with a third state, None: `--name` or `--no-name`.
            group.add_argument(
                name,
                action=argparse.BooleanOptionalAction,
                default=default,
                help=metadata["help"],
            )
        else:
            group.add_argument(
                name,
                type=PARSERS.get(field.name, _plain_type(field.type)),
                default=default,
                choices=metadata["choices"],
                help=metadata["help"],
            )
    parser.set_defaults(output_dir=output_dir)
    return parser


def _plain_type(annotation):
    """`int | None` -> int."""
    if isinstance(annotation, types.UnionType):
        return next(t for t in typing.get_args(annotation) if t is not type(None))
    return annotation


def parse_training_options(parser, argv=None):
    """Parses `argv` after the `--config` file's options.

    Returns:
        `(args, config)`: the `argparse.Namespace` (with the recipe's own
        options) and the run's `TrainingConfig`. Every problem is the
        parser's error (`SystemExit` with the message).
    """
    args = parser.parse_args(argv)
    if args.config:
        config_argv = _config_arguments(parser, args.config)
        # Parsed alone first, so that its errors name the file.
        parser.exit_on_error = False
        try:
            parser.parse_args(config_argv)
        except argparse.ArgumentError as error:
            parser.error(f"--config {args.config}: {error}")
        finally:
            parser.exit_on_error = True
        args = parser.parse_args([*config_argv, *(argv or [])])
    with option_errors(parser):
        config = training.TrainingConfig(
            **{
                field.name: getattr(args, field.name)
                for field in dataclasses.fields(training.TrainingConfig)
                if field.init
            }
        )
    return args, config


@contextlib.contextmanager
def option_errors(parser):
    """Reports a `TrainingConfigError` as the parser's error, the fields
    named as options."""
    try:
        yield
    except training.TrainingConfigError as error:
        parser.error(error.option_message())


def _config_arguments(parser, path):
    """The `--config` file's options as command-line arguments."""
    if not os.path.isfile(path):
        parser.error(f"--config: no such file: {path}")
    with open(path) as file:
        try:
            config = json.load(file)
        except json.JSONDecodeError as error:
            parser.error(f"--config {path}: not valid JSON: {error}")
    if not isinstance(config, dict):
        parser.error(f"--config {path}: must hold a JSON object of options.")
    actions = {
        action.dest: action
        for action in parser._actions
        if action.option_strings and action.dest not in ("help", "config")
    }
    argv = []
    for key, value in config.items():
        action = actions.get(key.lstrip("-").replace("-", "_"))
        if action is None:
            parser.error(f"--config {path}: unknown option {key!r}.")
        option = action.option_strings[0]
        if value is None:
            continue  # the default
        switch = isinstance(
            action, (argparse._StoreTrueAction, argparse.BooleanOptionalAction)
        )
        if switch:
            if not isinstance(value, bool):
                parser.error(
                    f"--config {path}: {option} is a switch: true or false. "
                    f"Received: {value!r}"
                )
            if value:
                argv.append(option)
            elif isinstance(action, argparse.BooleanOptionalAction):
                argv.append(action.option_strings[1])
        elif isinstance(value, dict):
            argv += [option, json.dumps(value)]
        elif isinstance(value, list):
            argv += [option, ",".join(str(item) for item in value)]
        else:
            argv += [option, str(value)]
    return argv

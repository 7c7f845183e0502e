"""What a recipe leaves at the end: a loss plot and a one-screen summary."""

import csv

LOSS_COLUMNS = ("loss", "itc_loss", "itm_loss", "mlm_loss")


def read_step_log(path):
    """The per-step CSV of `StepLogger` as `{column: [floats]}`; a step
    logged twice (a run resumed from before it) keeps its last value."""
    rows = {}
    with open(path) as file:
        for row in csv.DictReader(file):
            rows[int(row["step"])] = row
    steps = sorted(rows)
    columns = [name for name in next(iter(rows.values()), {}) if name != "step"]
    log = {"step": [float(step) for step in steps]}
    for name in columns:
        log[name] = [float(rows[step][name] or "nan") for step in steps]
    return log


def plot_losses(step_log_path, png_path):
    """Plots the losses of a per-step CSV log into a PNG; returns its path."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    log = read_step_log(step_log_path)
    figure, axis = pyplot.subplots(figsize=(8, 4.5))
    for name in LOSS_COLUMNS:
        if name in log:
            axis.plot(log["step"], log[name], label=name)
    axis.set_xlabel("step")
    axis.set_ylabel("running mean over the epoch")
    axis.legend()
    axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(png_path, dpi=100)
    pyplot.close(figure)
    return png_path


def print_summary(title, timing, batch_size, final_logs, files, extra=None, details=()):
    """Prints the run's summary: speed, final losses, where the files are.

    Args:
        title: str. timing: the dict of `fit_resumable`.
        batch_size: int. The global batch.
        final_logs: dict of the last step's metrics.
        files: dict of name -> path.
        extra: optional dict of name -> value (e.g. evaluation results).
        details: lines printed after the files (e.g. an evaluation table).
    """
    steps, seconds = timing["steps"], max(timing["seconds"], 1e-9)
    lines = [
        "",
        "=" * 64,
        title,
        f"  steps {timing['start_step']} -> {timing['start_step'] + steps}"
        f" ({steps} now, {seconds:.0f} s): {steps / seconds:.2f} steps/s,"
        f" {steps * batch_size / seconds:.1f} images/s",
    ]
    if final_logs:
        lines.append(
            "  final: "
            + ", ".join(f"{name} {value:.4f}" for name, value in final_logs.items())
        )
    for name, value in (extra or {}).items():
        lines.append(f"  {name}: {value}")
    lines += [f"  {name}: {path}" for name, path in files.items()]
    lines += list(details)
    lines.append("=" * 64)
    print("\n".join(lines), flush=True)

"""Accuracy against speed at inference: one fine-tuned model, several keep
rates."""

KEEP_RATES = (1.0, 0.9, 0.7, 0.5, 0.3)


def keep_rate_sweep(model, evaluate, keep_rates=KEEP_RATES):
    """Evaluates `model` at each keep rate (all selection stages alike).

    Args:
        model: a task model (`TRIPSTask`); its keep rate is restored after.
        evaluate: `evaluate(model) -> dict` of metrics and `"images_per_s"`
            (e.g. `evaluate_task` with its data bound).
        keep_rates: the rates.

    Returns:
        list of dicts: `{"keep_rate", **evaluate(model)}` per rate.
    """
    original = model.backbone.vision_encoder.keep_rate
    rows = []
    try:
        for rate in keep_rates:
            model.set_keep_rate(rate)
            rows.append({"keep_rate": rate, **evaluate(model)})
    finally:
        model.set_keep_rate(original)
    return rows


def plot_keep_rate_curve(rows, metric, path, title=""):
    """Plots `metric` against images/s, one point per keep rate, into a PNG.

    Returns the PNG's path.
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, axis = pyplot.subplots(figsize=(6, 4))
    speeds = [row["images_per_s"] for row in rows]
    values = [row[metric] for row in rows]
    axis.plot(speeds, values, marker="o")
    for row, speed, value in zip(rows, speeds, values, strict=True):
        axis.annotate(
            f"keep {row['keep_rate']:g}",
            (speed, value),
            textcoords="offset points",
            xytext=(4, 4),
            fontsize=8,
        )
    axis.set_xlabel("evaluation images/s")
    axis.set_ylabel(metric)
    axis.set_title(title)
    axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    pyplot.close(figure)
    return path

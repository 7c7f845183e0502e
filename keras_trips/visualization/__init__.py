"""Pictures of what TRIPS patch selection keeps (matplotlib, Agg)."""

from keras_trips.visualization.selection_plot import (
    figure_size_px,
    plot_selection,
    selection_maps,
    write_selection_examples,
)

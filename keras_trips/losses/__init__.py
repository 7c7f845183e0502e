"""keras_trips.losses: training objectives of the downstream tasks."""

from keras_trips.losses.box_regression_loss import BoxRegressionLoss

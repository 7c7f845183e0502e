import keras

from keras_trips.utils.train_step import distinct_train_step


def test_distinct_train_step_nests_and_restores():
    model = keras.Sequential([keras.layers.Dense(1)])
    bound = model.train_step
    with distinct_train_step(model):
        outer = model.train_step
        assert outer != bound
        with distinct_train_step(model):
            # A train function built here traces apart from the outer one.
            assert model.train_step is not outer
            assert model.train_step != outer
        assert model.train_step is outer
    assert "train_step" not in vars(model)
    assert model.train_step == bound

"""The task models export as TF SavedModels whose outputs match Keras."""

import keras
import numpy as np
import pytest
from harness import numpy
from pretraining_utils import MICRO
from task_utils import END, PROMPT, task_features

from keras_trips.export import export_saved_model
from keras_trips.models import (
    TRIPSNLVR2,
    TRIPSVQA,
    TRIPSBackbone,
    TRIPSCaptioner,
    TRIPSGrounding,
)

pytestmark = pytest.mark.skipif(
    keras.backend.backend() == "torch",
    reason="Keras writes SavedModels from TensorFlow and JAX",
)

TASKS = {
    "vqa": (lambda b: TRIPSVQA(b, answers=["yes", "no", "2"]), False),
    "nlvr2": (TRIPSNLVR2, True),
    "grounding": (TRIPSGrounding, False),
    "captioning": (
        lambda b: TRIPSCaptioner(b, prompt_token_ids=PROMPT, end_token_id=END),
        False,
    ),
}


SIGNATURES = {
    "vqa": "answer",
    "nlvr2": "nlvr2",
    "grounding": "box",
    "captioning": "caption",
}


def keras_outputs(task, model, x):
    if task == "captioning":
        max_length = model.sequence_length - len(PROMPT)
        return {"token_ids": model.generate(x["images"], max_length=max_length)}
    logits = model(x)
    if task == "vqa":
        return {
            "answer_probabilities": keras.ops.sigmoid(logits),
            "answer_index": keras.ops.argmax(logits, axis=-1),
        }
    if task == "nlvr2":
        return {"probability_true": keras.ops.softmax(logits)[:, 1], "logits": logits}
    return {"boxes": logits}


@pytest.mark.parametrize("task", list(TASKS))
def test_served_outputs_match_keras(task, tmp_path):
    import tensorflow as tf

    make_model, pairs = TASKS[task]
    model = make_model(TRIPSBackbone(**MICRO))
    path = str(tmp_path / task)
    names = export_saved_model(model, path, sequence_length=8)
    # Raw uint8 pixels under the task's name, normalised float32 beside it.
    name = SIGNATURES[task]
    assert sorted(names) == [name, f"{name}_normalized"]
    x = task_features(batch=3, pairs=pairs)
    served = tf.saved_model.load(path).signatures[f"{name}_normalized"]
    arguments = served.structured_input_signature[1]
    outputs = served(
        **{
            key: tf.cast(x["images" if key.startswith("images") else key], spec.dtype)
            for key, spec in arguments.items()
        }
    )
    expected = keras_outputs(task, model, x)
    assert sorted(outputs) == sorted(expected)
    for key, value in expected.items():
        np.testing.assert_allclose(outputs[key].numpy(), numpy(value), atol=1e-5)

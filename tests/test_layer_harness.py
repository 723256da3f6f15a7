"""Every public layer passes Keras's own layer test harness.

`run_layer_test` checks building, symbolic and eager calls, serialization,
a compiled training step and the mixed-precision dtype contract.
"""

import numpy as np
import pytest
from keras.src.testing import TestCase

from keras_tfm import (
    DecoderBlock,
    EncoderBlock,
    FeedForward,
    MultiHeadCrossAttention,
    MultiHeadSelfAttention,
    PositionalEmbedding,
    RelativePositionBias,
    RotaryEmbedding,
    SinusoidalEncoding,
)
from keras_tfm.layers.normalization import OffsetRMSNormalization
from keras_tfm.models.causal_lm import SoftCap


class LayerHarnessTest(TestCase):
    def test_sinusoidal_encoding(self):
        self.run_layer_test(
            SinusoidalEncoding,
            init_kwargs={"max_wavelength": 1000},
            input_shape=(2, 5, 8),
            expected_output_shape=(2, 5, 8),
            expected_num_trainable_weights=0,
            run_training_check=False,
        )

    def test_rotary_embedding(self):
        self.run_layer_test(
            RotaryEmbedding,
            init_kwargs={},
            input_shape=(2, 5, 3, 8),
            expected_output_shape=(2, 5, 3, 8),
            expected_num_trainable_weights=0,
            run_training_check=False,
        )

    def test_relative_position_bias(self):
        for bidirectional in (True, False):
            self.run_layer_test(
                RelativePositionBias,
                init_kwargs={
                    "num_heads": 3,
                    "num_buckets": 8,
                    "max_distance": 16,
                    "bidirectional": bidirectional,
                },
                input_shape=(2, 5, 4),
                expected_output_shape=(1, 3, 5, 5),
                expected_num_trainable_weights=1,
            )

    def test_positional_embedding(self):
        for position, weights in (("learned", 2), ("sinusoidal", 1)):
            self.run_layer_test(
                PositionalEmbedding,
                init_kwargs={
                    "vocab_size": 11,
                    "sequence_length": 8,
                    "embed_dim": 6,
                    "position": position,
                    "mask_zero": True,
                },
                input_data=np.array([[1, 2, 3, 0], [4, 5, 0, 0]], "int32"),
                expected_output_shape=(2, 4, 6),
                expected_num_trainable_weights=weights,
                supports_masking=True,
            )

    def test_multi_head_self_attention(self):
        self.run_layer_test(
            MultiHeadSelfAttention,
            init_kwargs={"num_heads": 4, "num_kv_heads": 2, "causal": True},
            input_shape=(2, 5, 8),
            expected_output_shape=(2, 5, 8),
            expected_num_trainable_weights=8,
            supports_masking=True,
        )

    def test_multi_head_self_attention_rotary_no_bias(self):
        self.run_layer_test(
            MultiHeadSelfAttention,
            init_kwargs={
                "num_heads": 2,
                "key_dim": 6,
                "rotary": True,
                "use_bias": False,
                "dropout": 0.1,
            },
            input_shape=(2, 5, 8),
            expected_output_shape=(2, 5, 8),
            expected_num_trainable_weights=4,
            expected_num_seed_generators=1,
        )

    def test_multi_head_cross_attention(self):
        self.run_layer_test(
            MultiHeadCrossAttention,
            init_kwargs={"num_heads": 2},
            input_shape={"x_shape": (2, 5, 8), "context_shape": (2, 7, 4)},
            expected_output_shape=(2, 5, 8),
            expected_num_trainable_weights=8,
            # The harness trains on one positional input; a two-input layer
            # is trained by the functional models in test_training.py.
            run_training_check=False,
        )

    def test_feed_forward(self):
        for activation, weights in (("gelu", 4), ("swiglu", 6)):
            self.run_layer_test(
                FeedForward,
                init_kwargs={"hidden_dim": 16, "activation": activation},
                input_shape=(2, 5, 8),
                expected_output_shape=(2, 5, 8),
                expected_num_trainable_weights=weights,
            )

    def test_encoder_block(self):
        self.run_layer_test(
            EncoderBlock,
            init_kwargs={"num_heads": 2, "ff_dim": 16, "norm_first": True},
            input_shape=(2, 5, 8),
            expected_output_shape=(2, 5, 8),
            # 8 attention + 4 feed-forward + 2 x 2 layer-norm weights.
            expected_num_trainable_weights=16,
            supports_masking=True,
        )

    def test_decoder_block(self):
        self.run_layer_test(
            DecoderBlock,
            init_kwargs={"num_heads": 2, "ff_dim": 16, "norm": "rms"},
            input_shape={"x_shape": (2, 5, 8), "context_shape": (2, 7, 8)},
            expected_output_shape=(2, 5, 8),
            # 2 x 8 attention + 4 feed-forward + 3 RMS-norm scales.
            expected_num_trainable_weights=23,
            run_training_check=False,
        )

    def test_block_norm_placements_and_offset(self):
        for placement, norms in (("sandwich", 4), ("output", 2)):
            self.run_layer_test(
                EncoderBlock,
                init_kwargs={
                    "num_heads": 2,
                    "ff_dim": 16,
                    "norm": {
                        "type": "rms",
                        "placement": placement,
                        "offset": 1.0,
                    },
                },
                input_shape=(2, 5, 8),
                expected_output_shape=(2, 5, 8),
                # 8 attention + 4 feed-forward + one scale per norm.
                expected_num_trainable_weights=12 + norms,
                supports_masking=True,
            )

    def test_block_parallel_residuals(self):
        for residual, norms in (("parallel", 2), ("parallel_shared_norm", 1)):
            self.run_layer_test(
                DecoderBlock,
                init_kwargs={
                    "num_heads": 2,
                    "ff_dim": 16,
                    "cross_attention": False,
                    "norm": {"type": "rms", "placement": "pre"},
                    "residual": residual,
                },
                input_shape=(2, 5, 8),
                expected_output_shape=(2, 5, 8),
                expected_num_trainable_weights=12 + norms,
            )

    def test_offset_rms_normalization(self):
        self.run_layer_test(
            OffsetRMSNormalization,
            init_kwargs={"epsilon": 1e-6, "offset": 1.0},
            input_shape=(2, 5, 8),
            expected_output_shape=(2, 5, 8),
            expected_num_trainable_weights=1,
            supports_masking=True,
        )

    def test_soft_cap(self):
        self.run_layer_test(
            SoftCap,
            init_kwargs={"cap": 3.0},
            input_shape=(2, 5, 8),
            expected_output_shape=(2, 5, 8),
            expected_num_trainable_weights=0,
            supports_masking=True,
            run_training_check=False,
        )

    def test_decoder_only_block(self):
        self.run_layer_test(
            DecoderBlock,
            init_kwargs={
                "num_heads": 2,
                "ff_dim": 16,
                "cross_attention": False,
                "rotary": True,
                "activation": "swiglu",
            },
            input_shape=(2, 5, 8),
            expected_output_shape=(2, 5, 8),
            expected_num_trainable_weights=18,
        )


@pytest.mark.parametrize(
    "layer",
    [
        SinusoidalEncoding(max_wavelength=50),
        RotaryEmbedding(max_wavelength=70),
        PositionalEmbedding(9, 7, 4, "sinusoidal", True, True, 500),
        MultiHeadSelfAttention(3, 5, 1, 0.2, False, True, True),
        MultiHeadCrossAttention(3, 5, 0.2, False),
        FeedForward(12, "swiglu", 0.3),
        EncoderBlock(2, 8, 0.0, "gelu", True, "rms", 1e-3, True, 1),
        DecoderBlock(2, 8, cross_attention=False, norm_first=True, dropout=0),
        DecoderBlock(
            2,
            8,
            cross_attention=False,
            residual="parallel_shared_norm",
            norm={"type": "rms", "placement": "pre", "offset": 1.0},
        ),
        EncoderBlock(2, 8, norm={"placement": "sandwich"}),
        OffsetRMSNormalization(1e-5, 0.5),
        SoftCap(2.0),
    ],
    ids=lambda layer: type(layer).__name__,
)
def test_config_lists_every_constructor_argument(layer):
    import inspect

    config = layer.get_config()
    arguments = inspect.signature(type(layer).__init__).parameters
    for name, argument in arguments.items():
        # Not `*legacy_arguments` (0.1's positional order) or `**kwargs`.
        named = (argument.POSITIONAL_OR_KEYWORD, argument.KEYWORD_ONLY)
        if name != "self" and argument.kind in named:
            assert name in config, f"get_config() lacks `{name}`"
    rebuilt = type(layer).from_config(config)
    assert rebuilt.get_config() == config

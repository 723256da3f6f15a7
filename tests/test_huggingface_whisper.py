"""Whisper checkpoints against `transformers` itself, and the audio
embedding layer its encoder starts with: random checkpoints made offline
from small configs with odd sizes."""

import numpy as np
import pytest
from keras.src.testing import TestCase

from keras_tfm.layers.audio import AudioEmbedding
from tests.conftest import random_inputs, to_numpy

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


class AudioEmbeddingHarnessTest(TestCase):
    def test_layer_harness(self):
        self.run_layer_test(
            AudioEmbedding,
            init_kwargs={"embed_dim": 6, "sequence_length": 5, "channels": 3},
            input_shape=(2, 10, 3),
            expected_output_shape=(2, 5, 6),
            expected_num_trainable_weights=4,
            expected_num_non_trainable_weights=1,
        )


def test_audio_embedding_equals_whisper_encoder_front_end():
    """Whisper's convolutions (PyTorch's padding on both sides, strides 1
    and 2, exact GELU) and sinusoids, on an odd number of frames too."""
    from transformers.models.whisper import modeling_whisper

    torch.manual_seed(0)
    conv_1 = torch.nn.Conv1d(5, 8, kernel_size=3, padding=1)
    conv_2 = torch.nn.Conv1d(8, 8, kernel_size=3, stride=2, padding=1)
    table = modeling_whisper.sinusoids(7, 8)
    layer = AudioEmbedding(embed_dim=8, sequence_length=7, channels=5)
    layer.build((None, None, 5))
    for ours, theirs in ((layer.conv_1, conv_1), (layer.conv_2, conv_2)):
        ours.kernel.assign(theirs.weight.detach().numpy().transpose(2, 1, 0))
        ours.bias.assign(theirs.bias.detach().numpy())
    for frames in (14, 13):
        features = random_inputs(2, frames, 5)
        with torch.no_grad():
            x = torch.nn.functional.gelu(conv_1(torch.tensor(features).mT))
            x = torch.nn.functional.gelu(conv_2(x)).mT
            expected = (x + table[: x.shape[1]]).numpy()
        np.testing.assert_allclose(
            to_numpy(layer(features)), expected, atol=1e-5
        )


REFUSED = [
    ({"embed_dim": 7}, (1, 8, 3), "embed_dim=7"),
    ({}, (1, 8, 4), "`channels`=3"),
    ({}, (1, 9, 3), "`sequence_length`=4"),
    ({}, (8, 3), "rank 3"),
]


@pytest.mark.parametrize(("changes", "shape", "message"), REFUSED)
def test_audio_embedding_refuses_bad_input(changes, shape, message):
    options = {"embed_dim": 6, "sequence_length": 4, "channels": 3}
    with pytest.raises(ValueError, match=message):
        AudioEmbedding(**{**options, **changes})(np.zeros(shape, "float32"))

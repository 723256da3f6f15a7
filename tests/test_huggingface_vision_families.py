"""DINOv2, DeiT and ViT's base model against `transformers` itself, and
the options of the image tower they use (`ViTEncoder`, `PatchEmbedding`).

Random checkpoints made offline from small configs with odd sizes; images
are channels-last here, channels-first for `transformers`.
"""

import json

import keras
import numpy as np
import pytest

from keras_tfm import interop
from keras_tfm.layers.vision import PatchEmbedding, bicubic_resize_matrix
from keras_tfm.models.vision import ViTClassifier, ViTEncoder
from tests.conftest import to_numpy
from tests.huggingface_checks import (
    Checkpoints,
    assert_changed_weights_write_back,
    assert_close,
    assert_loads_as_transformers,
    assert_transformers_reloads,
    copied,
    torch_outputs,
    trained_on,
)

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

IMAGES = np.random.default_rng(0).random((2, 12, 12, 3)).astype("float32")
SIZES = {
    "image_size": 12, "patch_size": 4, "hidden_size": 48,
    "num_hidden_layers": 2, "num_attention_heads": 3,
}  # fmt: skip


def pixels(images):
    return {"pixel_values": torch.tensor(images.transpose(0, 3, 1, 2))}


def image_case(model_class, config_class, **overrides):
    def case():
        reference = model_class(config_class(**SIZES, **overrides))
        return reference, IMAGES, pixels(IMAGES)

    return case


CASES = {
    # mlp_ratio 2; layer scale made random by `widen`.
    "dinov2": image_case(
        transformers.Dinov2ForImageClassification, transformers.Dinov2Config,
        mlp_ratio=2, num_labels=5,
    ),
    "dinov2_swiglu": image_case(
        transformers.Dinov2Model, transformers.Dinov2Config,
        mlp_ratio=2, use_swiglu_ffn=True,
    ),
    "dinov2_registers": image_case(
        transformers.Dinov2WithRegistersForImageClassification,
        transformers.Dinov2WithRegistersConfig,
        mlp_ratio=2, num_register_tokens=2, num_labels=5,
    ),
    "deit": image_case(
        transformers.DeiTForImageClassification, transformers.DeiTConfig,
        intermediate_size=72, num_labels=5,
    ),
    "deit_teacher": image_case(
        transformers.DeiTForImageClassificationWithTeacher,
        transformers.DeiTConfig, intermediate_size=72, num_labels=5,
    ),
    "vit_model": image_case(
        transformers.ViTModel, transformers.ViTConfig, intermediate_size=72,
    ),
    "deit_model": image_case(
        transformers.DeiTModel, transformers.DeiTConfig, intermediate_size=72,
    ),
}  # fmt: skip


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    return Checkpoints(tmp_path_factory, CASES)


@pytest.mark.parametrize("case", CASES)
def test_loaded_model_equals_transformers(case, checkpoints):
    assert_loads_as_transformers(checkpoints[case])


@pytest.mark.parametrize(
    "case", ["dinov2_swiglu", "dinov2_registers", "deit_teacher", "deit_model"]
)
def test_changed_weights_write_back_for_transformers(
    case, checkpoints, tmp_path
):
    assert_changed_weights_write_back(case, checkpoints[case], tmp_path)


@trained_on("torch")
def test_trained_model_writes_back_for_transformers(checkpoints, tmp_path):
    """DINOv2's layer scale, folded into the projections, trained with
    `fit` and written back as ones."""
    from safetensors.numpy import load_file

    model = interop.from_huggingface(checkpoints["dinov2"][0])
    model.compile(
        optimizer=keras.optimizers.SGD(0.1),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(IMAGES, np.array([1, 3]), epochs=1, verbose=0)
    interop.to_huggingface(model, tmp_path)
    scale = load_file(tmp_path / "model.safetensors")[
        "dinov2.encoder.layer.1.layer_scale2.lambda1"
    ]
    np.testing.assert_array_equal(scale, 1.0)
    assert_transformers_reloads(
        "dinov2", model, checkpoints["dinov2"], tmp_path
    )


@pytest.mark.parametrize(
    ("case", "image_size"), [("dinov2", 20), ("dinov2_registers", 8)]
)
def test_dinov2_resizes_its_positions_as_transformers(
    case, image_size, checkpoints, tmp_path
):
    """The loaded model rebuilt at another image size, with the same
    weights, resizes its 3 x 3 position table as transformers does:
    DINOv2 with registers antialiases. Written back, the image size is the
    table's."""
    directory, reference, _, _ = checkpoints[case]
    loaded = interop.from_huggingface(directory)
    model = ViTClassifier.from_config(
        {**loaded.get_config(), "image_size": image_size}
    )
    model.set_weights(loaded.get_weights())
    images = np.random.default_rng(1).random((2, image_size, image_size, 3))
    images = images.astype("float32")
    expected = torch_outputs(reference, pixels(images)).numpy()
    assert_close(model(images), expected)
    interop.to_huggingface(model, tmp_path)
    with open(tmp_path / "config.json") as file:
        assert json.load(file)["image_size"] == 12


@pytest.mark.parametrize("antialias", [False, True])
def test_bicubic_resize_matrix_equals_pytorch(antialias):
    grid = np.random.default_rng(2).normal(size=(5, 5))
    for target in (2, 5, 9):
        matrix = bicubic_resize_matrix(5, target, antialias)
        expected = torch.nn.functional.interpolate(
            torch.tensor(grid)[None, None], size=(target, target),
            mode="bicubic", align_corners=False, antialias=antialias,
        )[0, 0].numpy()  # fmt: skip
        np.testing.assert_allclose(matrix @ grid @ matrix.T, expected, 1e-12)


UNSUPPORTED = [
    ("dinov2", {"qkv_bias": False}, "qkv_bias=False"),
    ("dinov2", {"hidden_act": "gelu_fast"}, "hidden_act='gelu_fast'"),
    ("dinov2", {"image_size": [12, 12]}, r"image_size=\[12, 12\]"),
    ("deit", {"qkv_bias": False}, "qkv_bias=False"),
    ("deit", {"hidden_act": "gelu_fast"}, "hidden_act='gelu_fast'"),
    ("deit", {"architectures": ["DeiTForMaskedImageModeling"]},
     "DeiTForMaskedImageModeling"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "changes", "message"), UNSUPPORTED)
def test_unsupported_checkpoints_raise_a_clear_error(
    case, changes, message, checkpoints, tmp_path
):
    directory = copied(checkpoints, case, tmp_path, **changes)
    with pytest.raises(ValueError, match=message):
        interop.from_huggingface(directory)


def test_writing_refuses_what_the_family_cannot_express(checkpoints, tmp_path):
    """A DeiT classifier has its distillation token; DINOv2's mlp_ratio
    is an integer (DeiT's feed-forward is 1.5 times as wide)."""
    dinov2 = interop.from_huggingface(checkpoints["dinov2"][0])
    with pytest.raises(ValueError, match="distillation_token=False"):
        interop.to_huggingface(dinov2, tmp_path, model_type="deit")
    deit = interop.from_huggingface(checkpoints["deit"][0])
    with pytest.raises(ValueError, match="no integer mlp_ratio"):
        interop.to_huggingface(deit, tmp_path, model_type="dinov2")


# --- The image tower's options ---------------------------------------------


def test_vit_encoder_options_save_and_reload(tmp_path):
    """Every option of the tower, through a .keras file."""
    encoder = ViTEncoder(
        8, 2, 1, 12, 3, 24, channels=1, class_token=False, patch_bias=False,
        embedding_norm=True, final_norm=False, num_registers=2,
        distillation_token=True, position_grid=3,
    )  # fmt: skip
    images = np.random.default_rng(3).random((2, 8, 8, 1))
    states = encoder(images)
    assert states.shape == (2, 1 + 2 + 16, 12)
    assert encoder.final_norm is None and encoder.embedding_norm is not None
    assert encoder.patch_embedding.projection.bias is None
    encoder.save(tmp_path / "encoder.keras")
    reloaded = keras.models.load_model(tmp_path / "encoder.keras")
    assert reloaded.get_config() == encoder.get_config()
    np.testing.assert_allclose(to_numpy(reloaded(images)), to_numpy(states))


def test_registers_have_no_position_and_follow_the_leading_tokens():
    layer = PatchEmbedding(2, 4, distillation_token=True, num_registers=2)
    images = np.random.default_rng(4).random((1, 4, 4, 1)).astype("float32")
    tokens = to_numpy(layer(images))[0]
    np.testing.assert_allclose(
        tokens[2:4], to_numpy(layer.register_tokens), atol=1e-7
    )
    np.testing.assert_allclose(
        tokens[1],
        to_numpy(layer.distillation_token)[0, 0]
        + to_numpy(layer.position_embeddings)[1],
        atol=1e-7,
    )


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"pooling": "mean"}, "pooling"),
        ({"distillation_head": True}, "distillation_token=True"),
        ({"num_registers": -1}, "num_registers"),
        ({"position_grid": 0}, "position_grid"),
    ],
)
def test_bad_classifier_options_raise(arguments, message):
    with pytest.raises(ValueError, match=message):
        ViTClassifier(8, 2, 3, 1, 12, 3, 24, **arguments)

"""Classify handwritten digits with a Vision Transformer.

Uses scikit-learn's bundled 8x8 digits (1,797 images, no download): each image
is cut into 2x2 patches, embedded with a class token by
`models.vit_classifier`, and classified from the class token.

    python examples/vit_digits.py                    # about 2 minutes
    python examples/vit_digits.py --images my.npz    # your own images

`--images` takes an `.npz` file with `images` (N, side, side) or
(N, side, side, channels) and integer `labels` (N,).
"""

import keras
import numpy as np
from common import (
    parse_arguments,
    progress_verbosity,
    save_figure,
    training_callbacks,
)
from sklearn.datasets import load_digits

from keras_tfm import models


def load_images(path):
    if path is None:
        digits = load_digits()
        return digits.images / 16.0, digits.target
    data = np.load(path)
    return data["images"].astype("float32"), data["labels"]


def split(images, labels, seed, test_fraction=0.2):
    order = np.random.default_rng(seed).permutation(len(images))
    test_count = int(len(images) * test_fraction)
    test, train = order[:test_count], order[test_count:]
    return (images[train], labels[train]), (images[test], labels[test])


def plot_predictions(images, true, predicted, count=24):
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(3, count // 3, figsize=(count // 3 * 1.2, 4))
    for axis, image, label, guess in zip(
        axes.ravel(), images, true, predicted, strict=False
    ):
        axis.imshow(image[..., 0], cmap="gray_r")
        axis.set_title(f"{guess}", color="black" if guess == label else "red")
        axis.axis("off")
    figure.suptitle("Test digits with the ViT's predictions (red: wrong)")
    figure.tight_layout()
    return figure


def main():
    args = parse_arguments(
        __doc__.splitlines()[0],
        epochs=60,
        images={"default": None, "help": ".npz with `images` and `labels`"},
    )
    images, labels = load_images(args.images)
    if images.ndim == 3:
        images = images[..., None]
    images = images.astype("float32")
    num_classes = int(labels.max()) + 1
    (train_x, train_y), (test_x, test_y) = split(images, labels, args.seed)
    if args.quick:
        train_x, train_y = train_x[:256], train_y[:256]
    print(
        f"{len(train_x)} training images, {len(test_x)} test images, "
        f"{num_classes} classes, shape {images.shape[1:]}"
    )

    model = models.vit_classifier(
        image_size=images.shape[1],
        patch_size=2,
        num_classes=num_classes,
        num_layers=1 if args.quick else 4,
        embed_dim=64,
        num_heads=4,
        ff_dim=128,
        channels=images.shape[-1],
        dropout=0.1,
    )
    steps = args.epochs * int(np.ceil(len(train_x) / 32))
    schedule = keras.optimizers.schedules.CosineDecay(
        0.0, steps, alpha=0.01, warmup_target=1e-3, warmup_steps=steps // 10
    )
    model.compile(
        optimizer=keras.optimizers.AdamW(schedule, weight_decay=0.05),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    model.fit(
        train_x,
        train_y,
        validation_data=(test_x, test_y),
        epochs=args.epochs,
        batch_size=32,
        callbacks=training_callbacks(args, monitor="val_accuracy"),
        verbose=progress_verbosity(),
    )
    predictions = model.predict(test_x, verbose=0).argmax(-1)
    accuracy = (predictions == test_y).mean()
    figure = plot_predictions(test_x, test_y, predictions)
    save_figure(figure, args.output_dir, "predictions")
    print(f"\nTest accuracy: {accuracy:.1%} on {len(test_y)} held-out images")
    pairs = zip(test_y[:10], predictions[:10], strict=True)
    print("True -> predicted:", ", ".join(f"{t}->{p}" for t, p in pairs))


if __name__ == "__main__":
    main()

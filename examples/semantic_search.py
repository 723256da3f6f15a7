"""Semantic search over standard-library docstrings with a text encoder.

Each documented function or class of the standard library gives a query
(its docstring's first sentence) and a document (the rest of it). A
`models.TextEncoder` with mean pooling is trained so that a query's
embedding is closest to its own document's among the batch (in-batch
contrastive loss, as in sentence-embedding models); it then searches
documents it has not seen for held-out queries, and is compared with a
TF-IDF bag of word pieces on the same split.

    python examples/semantic_search.py
    python examples/semantic_search.py --checkpoint path/to/bert-or-roberta

`--checkpoint` takes a Hugging Face snapshot of a BERT-style encoder
(`bert`, `roberta`, `xlm-roberta`, `distilbert`, `electra`, `modernbert`,
`deberta-v2`; a classifier or masked LM gives its encoder), searched with
before and after fine-tuning, with the `tokenizer.json` it ships.
"""

import os

import keras
import keras_hub
import numpy as np
from common import (
    parse_arguments,
    progress_verbosity,
    standard_library_docstrings,
    training_callbacks,
    word_piece_tokenizer,
)
from keras import ops

from keras_tfm import interop, models

SEQUENCE_LENGTH = 64
TEMPERATURE = 0.05


def query_document_pairs(quick):
    """`(first sentence, rest)` of each docstring long enough for both."""
    pairs = []
    for _, text in standard_library_docstrings():
        query, _, document = text.partition(". ")
        if len(query.split()) >= 4 and len(document.split()) >= 8:
            pairs.append((query, document))
    order = np.random.default_rng(0).permutation(len(pairs))
    return [pairs[i] for i in order[: 600 if quick else 12000]]


def pooled_encoder(encoder):
    """A model from token ids to the unit-length mean of `encoder`'s
    outputs over the real tokens (its padding mask reaches the pooling)."""
    tokens = keras.Input((None,), dtype="int32", name="tokens")
    inputs = tokens
    if encoder.num_segments is not None:  # BERT's token types: all 0
        inputs = {"tokens": tokens, "segment_ids": ops.zeros_like(tokens)}
    pooled = keras.layers.GlobalAveragePooling1D()(encoder(inputs))
    return keras.Model(tokens, keras.layers.UnitNormalization()(pooled))


@keras.saving.register_keras_serializable(package="semantic_search")
class QueryDocumentScores(keras.Model):
    """The similarities of every query to every document of a batch,
    `(batch, batch)`, over `TEMPERATURE`: row i's answer is column i."""

    def __init__(self, embed, **kwargs):
        super().__init__(**kwargs)
        self.embed = embed

    def call(self, inputs):
        queries = self.embed(inputs["queries"])
        documents = self.embed(inputs["documents"])
        return ops.matmul(queries, ops.transpose(documents)) / TEMPERATURE

    def get_config(self):
        embed = keras.saving.serialize_keras_object(self.embed)
        return {**super().get_config(), "embed": embed}

    @classmethod
    def from_config(cls, config):
        embed = keras.saving.deserialize_keras_object(config.pop("embed"))
        return cls(embed, **config)


def in_batch_loss(_, scores):
    """Cross-entropy of each query against the batch's documents."""
    labels = ops.arange(ops.shape(scores)[0])
    return keras.losses.sparse_categorical_crossentropy(
        labels, scores, from_logits=True
    )


def search_accuracy(query_vectors, document_vectors, top=5):
    """How often a query's own document ranks first, and in the top 5."""
    scores = query_vectors @ document_vectors.T
    ranks = (scores > scores.diagonal()[:, None]).sum(axis=1)
    return (ranks == 0).mean(), (ranks < top).mean()


def tf_idf(train_ids, ids, vocab_size):
    """Unit-length TF-IDF vectors of word-piece ids (0 is padding), with
    document frequencies from `train_ids`."""
    present = np.zeros((len(train_ids), vocab_size), bool)
    present[np.arange(len(train_ids))[:, None], train_ids] = True
    inverse_frequency = np.log((1 + len(train_ids)) / (1 + present.sum(0)))
    counts = np.zeros((len(ids), vocab_size), "float32")
    np.add.at(counts, (np.arange(len(ids))[:, None], ids), 1.0)
    vectors = counts * inverse_frequency
    vectors[:, 0] = 0.0
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1)[:, None], 1e-9)


def tokenize_with(tokenizer, padding_id):
    """A function from texts to `(n, SEQUENCE_LENGTH)` ids: a keras-hub
    tokenizer learned here, or a checkpoint's `interop.Tokenizer`."""
    if isinstance(tokenizer, keras_hub.tokenizers.Tokenizer):
        return lambda texts: np.asarray(tokenizer(texts), "int32")

    def tokenize(texts):
        ids = np.full((len(texts), SEQUENCE_LENGTH), padding_id, "int32")
        for row, encoded in enumerate(tokenizer.encode_batch(texts)):
            encoded = encoded[:SEQUENCE_LENGTH]
            ids[row, : len(encoded)] = encoded
        return ids

    return tokenize


def load_encoder(directory):
    """The `TextEncoder` of a checkpoint, and its tokenizer."""
    model = interop.from_huggingface(directory, dtype="float32")
    encoder = getattr(model, "encoder", model)
    if not isinstance(encoder, models.TextEncoder):
        raise SystemExit(
            f"{directory} holds a {type(model).__name__}; semantic search "
            "needs a text encoder (BERT, RoBERTa, ...)."
        )
    return encoder, interop.load_tokenizer(directory)


def main():
    args = parse_arguments(
        __doc__.splitlines()[0],
        epochs=8,
        checkpoint={"default": None, "help": "a Hugging Face snapshot"},
    )
    pairs = query_document_pairs(args.quick)
    split = len(pairs) * 9 // 10
    queries, documents = (list(texts) for texts in zip(*pairs, strict=True))
    print(f"{split} training pairs, {len(pairs) - split} held out")

    if args.checkpoint:
        encoder, tokenizer = load_encoder(args.checkpoint)
    else:
        tokenizer = word_piece_tokenizer(
            documents[:split] + queries[:split],
            vocabulary_size=1000 if args.quick else 8000,
            sequence_length=SEQUENCE_LENGTH,
        )
        encoder = models.TextEncoder(
            vocab_size=tokenizer.vocabulary_size(),
            sequence_length=SEQUENCE_LENGTH,
            num_layers=1 if args.quick else 4,
            embed_dim=32 if args.quick else 256,
            num_heads=2 if args.quick else 4,
            ff_dim=64 if args.quick else 512,
        )
    tokenize = tokenize_with(tokenizer, encoder.padding_id)
    query_ids, document_ids = tokenize(queries), tokenize(documents)

    if not args.checkpoint:
        baseline = tf_idf(
            document_ids[:split],
            np.concatenate([query_ids[split:], document_ids[split:]]),
            tokenizer.vocabulary_size(),
        )
        held_out = len(pairs) - split
        top1, top5 = search_accuracy(baseline[:held_out], baseline[held_out:])
        print(f"TF-IDF baseline: top-1 {top1:.1%}, top-5 {top5:.1%}")

    embed = pooled_encoder(encoder)

    def evaluate(when):
        vectors = [
            keras.ops.convert_to_numpy(embed.predict(ids[split:], verbose=0))
            for ids in (query_ids, document_ids)
        ]
        top1, top5 = search_accuracy(*vectors)
        chance = 1 / (len(pairs) - split)
        print(
            f"Encoder {when}: top-1 {top1:.1%}, top-5 {top5:.1%} "
            f"(chance {chance:.1%})"
        )
        return vectors

    if args.checkpoint:
        evaluate("before fine-tuning")
    scores = QueryDocumentScores(embed)
    scores.compile(optimizer=keras.optimizers.Adam(3e-4), loss=in_batch_loss)
    inputs = {"queries": query_ids, "documents": document_ids}
    # Built before `fit`, whose BackupAndRestore needs its variables.
    scores({name: ids[:2] for name, ids in inputs.items()})
    scores.fit(
        {name: ids[:split] for name, ids in inputs.items()},
        np.zeros(split),
        validation_data=(
            {name: ids[split:] for name, ids in inputs.items()},
            np.zeros(len(pairs) - split),
        ),
        batch_size=32,
        epochs=args.epochs,
        callbacks=training_callbacks(args),
        verbose=progress_verbosity(),
    )
    query_vectors, document_vectors = evaluate("after training")
    best = query_vectors[0] @ document_vectors.T
    print(f"Query: {queries[split]!r}")
    for rank, index in enumerate(np.argsort(-best)[:3], 1):
        print(f"  {rank}. {documents[split + index][:100]!r}")
    encoder.save(os.path.join(args.output_dir, "encoder.keras"))


if __name__ == "__main__":
    main()

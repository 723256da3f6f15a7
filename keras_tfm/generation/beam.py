"""Beam search as `transformers.generate` runs it (`num_beams > 1`,
`do_sample=False`), in keras-hub's sampler interface.

transformers' beam search (its vectorised form since 4.50) keeps the
`num_beams` best unfinished beams and, apart, the `num_beams` best finished
hypotheses, scored by their summed log-probabilities divided by their
generated length to the power `length_penalty`; it stops early when no
running beam can beat the finished ones (`early_stopping`). keras-hub's
`BeamSampler` keeps extending beams after their end token and ranks them
by summed log-probabilities only, so the two pick different sequences as
soon as an end token is reached. This module follows transformers step by
step: the same candidates, the same scores, the same stopping rule.
"""

from keras import ops, tree
from keras_hub.samplers import Sampler

# transformers' stand-in for minus infinity in beam scores.
_FAR = -1.0e9


class BeamSearch(Sampler):
    """transformers' beam search, for a batch of prompts of one length.

    Args:
        num_beams: Beams per prompt.
        length_penalty: Exponent of the generated length that divides a
            finished hypothesis's summed log-probabilities (transformers'
            default 1.0; above 0 favours longer ones).
        early_stopping: `False` (transformers' default: stop when the best
            running beam, at its current length, cannot beat the worst
            finished hypothesis), `True` (stop once `num_beams` hypotheses
            have finished) or `"never"` (the best running beam is judged at
            the longest length when `length_penalty > 0`).
        temperature: Divides the logits before the log-softmax.

    Call arguments:
        As keras-hub's samplers (`next`, `prompt`, `cache`, `index`,
        `mask`, `stop_token_ids`, `model`); every prompt has `index`
        tokens, and the rest of `prompt` is filled in.

    Returns:
        The best finished hypothesis of each prompt, `(batch, length)`.
    """

    def __init__(
        self,
        num_beams,
        length_penalty=1.0,
        early_stopping=False,
        temperature=1.0,
        **kwargs,
    ):
        super().__init__(temperature=temperature, **kwargs)
        self.num_beams = num_beams
        self.length_penalty = length_penalty
        self.early_stopping = early_stopping

    def __call__(
        self,
        next,
        prompt,
        cache=None,
        index=0,
        mask=None,
        stop_token_ids=None,
        hidden_states=None,
        model=None,
    ):
        beams = self.num_beams
        batch_size, max_length = ops.shape(prompt)[0], ops.shape(prompt)[1]
        prompt_length = ops.cast(index, "int32")
        # Candidates kept per step: enough that `beams` of them go on even
        # when the others end.
        ends = len(stop_token_ids or ())
        keep = max(2, 1 + ends) * beams
        top_beams = ops.arange(keep) < beams

        def flat(x):
            return ops.reshape(x, (-1, *ops.shape(x)[2:]))

        def per_prompt(x):
            return ops.reshape(x, (-1, beams, *ops.shape(x)[1:]))

        def gather(x, indices):
            """`x[b, indices[b, i]]` for `x` (batch, n, ...)."""
            for _ in range(len(x.shape) - 2):
                indices = indices[..., None]
            return ops.take_along_axis(x, indices, axis=1)

        running = ops.repeat(prompt[:, None, :], beams, axis=1)
        running_scores = ops.where(ops.arange(beams) == 0, 0.0, _FAR)
        running_scores = ops.broadcast_to(
            ops.cast(running_scores, "float32"), (batch_size, beams)
        )
        cache = tree.map_structure(
            lambda x: ops.repeat(x, beams, axis=0), cache or ()
        )
        state = (
            running,
            running_scores,
            running,  # the finished hypotheses
            ops.full((batch_size, beams), _FAR, "float32"),
            ops.zeros((batch_size, beams), "bool"),  # finished
            ops.ones((batch_size, 1), "bool"),  # can still improve
            ops.zeros((batch_size, keep), "bool"),  # candidates that end
            cache,
            prompt_length,
        )

        def cond(*state):
            *_, finished, improvable, ended, _, index = state
            going = ops.any(improvable) & ops.logical_not(ops.all(ended))
            if self.early_stopping is True:
                going = going & ops.logical_not(ops.all(finished))
            return going & (index < max_length)

        def body(
            running, running_scores, sequences, scores, finished,
            improvable, ended, cache, index,
        ):  # fmt: skip
            logits, _, cache = next(flat(running), cache, index)
            logits = ops.cast(logits, "float32") / self.temperature
            vocab_size = ops.shape(logits)[-1]
            log_probs = per_prompt(ops.log_softmax(logits, axis=-1))
            log_probs = log_probs + running_scores[..., None]
            log_probs = ops.reshape(log_probs, (batch_size, -1))
            top_log_probs, top = ops.top_k(log_probs, k=keep)
            origins = top // vocab_size
            tokens = ops.cast(top % vocab_size, running.dtype)
            candidates = gather(running, origins)
            candidates = ops.slice_update(
                candidates, (0, 0, index), tokens[..., None]
            )
            ended = index + 1 >= max_length
            if stop_token_ids is not None:
                stops = ops.array(stop_token_ids, tokens.dtype)
                ended = ended | ops.any(tokens[..., None] == stops, axis=-1)
            ended = ops.broadcast_to(ended, ops.shape(tokens))

            # The best candidates that go on.
            going = top_log_probs + ops.cast(ended, "float32") * _FAR
            _, chosen = ops.top_k(going, k=beams)
            running = gather(candidates, chosen)
            running_scores = gather(going, chosen)
            batch_offsets = ops.arange(batch_size)[:, None] * beams
            rows = flat(gather(origins, chosen) + batch_offsets)
            cache = tree.map_structure(
                lambda x: ops.take(x, rows, axis=0), cache
            )

            # The best candidates that end, among the top `beams`.
            new = ended & top_beams[None, :]
            generated = ops.cast(index + 1 - prompt_length, "float32")
            new_scores = top_log_probs / generated**self.length_penalty
            blocked = ops.logical_not(improvable) | ops.logical_not(new)
            if self.early_stopping is True:
                blocked = blocked | ops.all(finished, axis=-1, keepdims=True)
            new_scores = new_scores + ops.cast(blocked, "float32") * _FAR
            merged_scores = ops.concatenate([scores, new_scores], axis=1)
            _, best = ops.top_k(merged_scores, k=beams)
            sequences = gather(
                ops.concatenate([sequences, candidates], axis=1), best
            )
            scores = gather(merged_scores, best)
            finished = gather(ops.concatenate([finished, new], axis=1), best)

            index = index + 1
            if self.early_stopping == "never" and self.length_penalty > 0:
                length = max_length - prompt_length
            else:
                length = index - prompt_length
            best_running = running_scores[:, :1] / (
                ops.cast(length, "float32") ** self.length_penalty
            )
            worst = ops.where(
                finished, ops.min(scores, axis=1, keepdims=True), _FAR
            )
            improvable = improvable & ops.any(
                best_running > worst, axis=-1, keepdims=True
            )
            return (
                running, running_scores, sequences, scores, finished,
                improvable, ended, cache, index,
            )  # fmt: skip

        state = self.run_loop(
            cond=cond,
            body=body,
            loop_vars=state,
            maximum_iterations=max_length - prompt_length,
            model=model,
        )
        return state[2][:, 0]

    def get_config(self):
        return {
            **super().get_config(),
            "num_beams": self.num_beams,
            "length_penalty": self.length_penalty,
            "early_stopping": self.early_stopping,
        }

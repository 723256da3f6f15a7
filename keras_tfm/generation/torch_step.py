"""The PyTorch decode step traced with `torch.export` (and optionally
compiled with `torch.compile`), with an eager fallback."""

import warnings

import keras


class TorchStep:
    """A model's `call_with_cache`, traced once per input shape on PyTorch
    for one-token steps (prefills run eagerly).

    `torch.export` in non-strict mode runs Keras's Python once and records
    only the tensor operations, so a traced step no longer pays Keras's
    per-layer call overhead; with `compile_program`, `torch.compile` then
    fuses the recorded program. The model is traced as a sub-module, so the
    program reads its current weights: training after a trace is seen. A
    trace that fails makes every later call run eagerly, after one warning.
    """

    def __init__(self, model, compile_program):
        self.model = model
        self.compile_program = compile_program
        self.programs = {}
        self.failed = False

    def __call__(self, tokens, cache, cache_index):
        # A prefill runs once per call of `generate`: its trace (as long as
        # a step's) would cost far more than the Python it saves.
        if self.failed or tokens.shape[1] != 1:
            return self.model.call_with_cache(tokens, cache, cache_index)
        import torch

        # On the tokens' device: a program traced with the index on one
        # device refuses it on another, and callers pass a Python int
        # (`stream`) or a tensor on the accelerator (`generate`'s loop).
        index = torch.as_tensor(
            cache_index, dtype=torch.int32, device=tokens.device
        )
        key = tuple(
            tuple(tensor.shape)
            for tensor in keras.tree.flatten((tokens, cache))
        )
        if key not in self.programs:
            try:
                self.programs[key] = self._trace(tokens, cache, index)
            except Exception as error:  # any tracing failure: run eagerly
                self.failed = True
                warnings.warn(
                    "keras_tfm.generation could not trace the decode step "
                    f"with torch.export ({type(error).__name__}: {error}); "
                    "decoding runs eagerly instead.",
                    stacklevel=2,
                )
                return self.model.call_with_cache(tokens, cache, cache_index)
        return self.programs[key](tokens, cache, index)

    def _trace(self, tokens, cache, index):
        import torch

        model = self.model

        class Step(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.model = model

            def forward(self, tokens, cache, index):
                return self.model.call_with_cache(tokens, cache, index)

        with torch.no_grad():
            program = torch.export.export(
                Step(), (tokens, cache, index), strict=False
            ).module()
        if self.compile_program:
            program = torch.compile(program)
        return program

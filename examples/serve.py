"""Run an exported model on saved inputs, without Keras: how it is served.

    python examples/serve.py FORMAT PATH INPUTS.npy OUTPUTS.npy

FORMAT is what `model.export(PATH, format=FORMAT)` wrote: `tf_saved_model`
(served with TensorFlow), `onnx` (ONNX Runtime) or `torch` (a
`torch.export` program). The outputs are saved to OUTPUTS.npy.
"""

import sys

import numpy as np


def serve(export_format, path, inputs):
    if export_format == "tf_saved_model":
        import tensorflow as tf

        # Keep the loaded object: its function reads the object's variables.
        model = tf.saved_model.load(path)
        return model.serve(tf.constant(inputs)).numpy()
    if export_format == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(path)
        input_name = session.get_inputs()[0].name
        return session.run(None, {input_name: inputs})[0]
    if export_format == "torch":
        import torch

        program = torch.export.load(path)
        return program.module()(torch.from_numpy(inputs)).detach().numpy()
    raise ValueError(
        "FORMAT must be tf_saved_model, onnx or torch. "
        f"Received: {export_format!r}"
    )


if __name__ == "__main__":
    export_format, path, inputs_path, outputs_path = sys.argv[1:]
    np.save(outputs_path, serve(export_format, path, np.load(inputs_path)))

import os

# Set before the tests import JAX. On a GPU, JAX would otherwise multiply
# float32 matrices in TensorFloat-32 (10-bit mantissa), far from the float32
# references the tests compare with, and each pytest-xdist worker would take
# 75% of the GPU's memory. Neither changes anything on a CPU.
os.environ.setdefault("JAX_DEFAULT_MATMUL_PRECISION", "float32")
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

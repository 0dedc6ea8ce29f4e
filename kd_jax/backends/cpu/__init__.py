"""CPU kernels: convolutions with CPU-specific backward passes and XLA's CPU compiler options (`conv`), and
oneDNN's convolutions called through XLA's FFI (`onednn`)."""

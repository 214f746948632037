"""The model's compute kernels in pairs: each Triton kernel beside the torch twin it is tested against, and the
choice between the two paths."""

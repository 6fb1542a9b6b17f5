"""Pure-PyTorch building blocks of the expert computation (ground truth for the fused kernels)."""

"""Inference: generating replies with the same template as training."""

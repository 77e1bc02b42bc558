"""Keeps the console readable: drops the libraries' notices that say nothing about this run (`--verbose` keeps them)."""

from __future__ import annotations

import logging

# logger name -> message starts that are noise on every run, with why each is safe to drop.
NOISE = {
    # bitsandbytes' optional CPU fast path (the `kernels` package); its plain CPU kernels work, and 4-bit runs say so.
    "bitsandbytes.backends.cpu.ops": ("Failed to load CPU gemm_4bit_forward",),
    # DeepSpeed imported by accelerate/transformers on a CPU machine (on stdout), even when DeepSpeed is not used.
    "DeepSpeed": ("Setting accelerator to CPU",),
    # transformers' config check in a torchrun worker before tunesmith adds the worker's DDP arguments.
    "transformers.training_args": ("torch.distributed process group is initialized, but parallel_mode",),
}


class _DropNoise(logging.Filter):
    def __init__(self, starts: tuple[str, ...]):
        super().__init__()
        self.starts = starts

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.starts)


def quiet_libraries() -> None:
    """Attaches the NOISE filters to their loggers (created now if the library is not imported yet)."""
    for name, starts in NOISE.items():
        logger = logging.getLogger(name)
        if not any(isinstance(item, _DropNoise) for item in logger.filters):
            logger.addFilter(_DropNoise(starts))

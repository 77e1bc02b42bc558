"""A Qwen-VL model's video processor (transformers' AutoVideoProcessor, which needs torchvision), loaded only when the
data has videos, and the error that says how to get torchvision."""

from __future__ import annotations

from tunesmith.errors import DependencyError, ModelError

VIDEO_MODEL_TYPES = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl", "qwen3_vl_moe")  # LF's qwen2_vl/qwen3_vl plugins' models


def torchvision_missing() -> str | None:
    """Why torchvision cannot be imported (None when it imports): absent, or built for another torch."""
    try:
        import torchvision  # noqa: F401
    except (ImportError, RuntimeError, OSError) as exc:  # a build for another torch fails with RuntimeError
        return f"{exc.__class__.__name__}: {str(exc)[:160]}"
    return None


def require_torchvision() -> None:
    """DependencyError unless torchvision imports: transformers' Qwen-VL video processors import it."""
    problem = torchvision_missing()
    if problem is None:
        return
    from importlib.metadata import PackageNotFoundError, version

    try:
        torch = version("torch")
    except PackageNotFoundError:
        torch = "unknown"
    raise DependencyError(
        f"videos need torchvision, which does not import here ({problem}): transformers' Qwen-VL video processor "
        f"(Qwen2VLVideoProcessor, Qwen3VLVideoProcessor) is built on it. Install the torchvision release that "
        f"matches your torch build ({torch}; e.g. `pip install torchvision` from the same index as torch) and run "
        "again. Images and audios train without it: drop the videos column to train on the rest"
    )


def load_video_processor(model_args) -> tuple[object, str]:
    """(video processor, model type) of a Qwen2-VL / Qwen2.5-VL / Qwen3-VL model: torchvision checked first, so
    a run with videos stops before any data or weights load."""
    from transformers import AutoConfig

    from tunesmith.model.load import _load_error, _source_kwargs

    name, kwargs = _source_kwargs(model_args)
    try:
        config = AutoConfig.from_pretrained(name, **kwargs)
    except (OSError, ValueError) as exc:
        raise _load_error(name, exc, "model") from None
    if config.model_type not in VIDEO_MODEL_TYPES:
        raise ModelError(
            f"the data holds videos, but {name} is a {config.model_type} model; videos train on Qwen2-VL, "
            f"Qwen2.5-VL and Qwen3-VL models ({', '.join(VIDEO_MODEL_TYPES)}): use one, or drop the videos column"
        )
    require_torchvision()
    from transformers import AutoVideoProcessor

    try:
        processor = AutoVideoProcessor.from_pretrained(name, **kwargs)
    except (OSError, ValueError, ImportError) as exc:
        raise ModelError(
            f"{name}'s video processor does not load ({exc.__class__.__name__}: {str(exc)[:200]}); it needs "
            "video_preprocessor_config.json or preprocessor_config.json"
        ) from None
    return processor, config.model_type

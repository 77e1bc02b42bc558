"""Images of multimodal records: LF's `images` column and `<image>` placeholders, paths, checks and LF's resizing."""

from __future__ import annotations

import math
from pathlib import Path

IMAGE_PLACEHOLDER = "<image>"
IMAGES = "images"  # the canonical record's column of image paths (present only when a dataset maps images)
# videos: data/video.py; audios: data/audio.py


def pyav(media: str):
    """PyAV (a tunesmith dependency, `av`, which decodes audios and videos), or an error saying how to get it."""
    try:
        import av
    except ImportError:
        from tunesmith.errors import DependencyError

        raise DependencyError(
            f"{media} are decoded with PyAV, which is not installed: pip install 'av>=14,<19' (or "
            "re-run scripts/setup.sh)"
        ) from None
    return av


def media_list(value) -> list:
    """A row's media value as a list: LF takes one path or a list of paths; null or [] is no media."""
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def resolve_image(name: str, media_dir: str | None) -> Path | None:
    """LF's lookup: media_dir/name when that file exists, else the path as given; None when neither is a file."""
    if media_dir:
        joined = Path(media_dir) / name
        if joined.is_file():
            return joined.absolute()
    path = Path(name).expanduser()
    return path.absolute() if path.is_file() else None


def check_image(path: Path) -> str | None:
    """Why the file cannot be used as an image (None when PIL reads its header)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.verify()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        return f"PIL cannot read it ({exc.__class__.__name__}: {str(exc)[:120]})"
    return None


def count_placeholders(messages: list[dict], placeholder: str = IMAGE_PLACEHOLDER) -> int:
    return sum(str(message.get("content") or "").count(placeholder) for message in messages)


def record_media(values, messages: list[dict], media_dir: str | None, fail, kind: str, placeholder: str, check,
                 note: str = "") -> list[str]:
    """A record's media of one kind ("image", "audio", "video") as absolute paths, checked: each exists and `check`
    (path -> why it is unusable, or None) passes, and the messages hold exactly one `placeholder` per file. `fail`
    (problem) returns the DataError naming the dataset, file and record; `note` ends the not-a-path message."""
    names = media_list(values)
    for position, name in enumerate(names):
        if not isinstance(name, str):
            raise fail(
                f"{kind} {position} must be a file path (text), got {type(name).__name__} {name!r:.60}; "
                f"tunesmith reads {kind}s from files{note}"
            )
    paths = []
    for position, name in enumerate(names):
        path = resolve_image(name, media_dir)  # every kind: media_dir/name, else the path as given
        if path is None:
            where = f"{Path(media_dir) / name} nor {name}" if media_dir else name
            raise fail(
                f"{kind} {position} ({name}) not found: no file {where}. Set media_dir (default: dataset_dir) "
                f"to the folder the {kind} paths are relative to, or fix the path"
            )
        problem = check(path)
        if problem:
            raise fail(f"{kind} {position} ({path}) is unreadable: {problem}")
        paths.append(str(path))
    count = count_placeholders(messages, placeholder)
    if count != len(paths):
        raise fail(
            f"{count} {placeholder} placeholders in its messages but {len(paths)} {kind}s in its {kind}s "
            f"column; put one {placeholder} in the text where each {kind} goes"
        )
    return paths


def record_images(values, messages: list[dict], media_dir: str | None, fail) -> list[str]:
    """A record's images, checked (record_media): each exists and PIL reads it, one <image> per image."""
    return record_media(values, messages, media_dir, fail, "image", IMAGE_PLACEHOLDER, check_image)


def check_placeholders(messages: list[dict], paths: list) -> None:
    """A DataError unless the messages hold one <image> per image (every plugin's expand checks this first)."""
    from tunesmith.errors import DataError

    if count_placeholders(messages) != len(paths):
        raise DataError(
            f"{count_placeholders(messages)} {IMAGE_PLACEHOLDER} placeholders but {len(paths)} "
            f"images ({', '.join(str(path) for path in paths[:3])})"
        )


def regularize_base(path, max_pixels: int, min_pixels: int):
    """LLaMA-Factory 0.9.5's BasePlugin._preprocess_image (Gemma 3, InternVL, LLaVA and LLaVA-NeXT take it
    unchanged): scale down to max_pixels, up to min_pixels, then RGB. `path`: a file path or an already opened PIL
    image (inference's decoded uploads), which is not changed."""
    from PIL import Image

    image = path if isinstance(path, Image.Image) else Image.open(path)
    if image.width * image.height > max_pixels:
        factor = math.sqrt(max_pixels / (image.width * image.height))
        image = image.resize((int(image.width * factor), int(image.height * factor)))
    if image.width * image.height < min_pixels:
        factor = math.sqrt(min_pixels / (image.width * image.height))
        image = image.resize((int(image.width * factor), int(image.height * factor)))
    if image.mode != "RGB":
        image = image.convert("RGB")
    return image


def regularize(path, max_pixels: int, min_pixels: int):
    """LLaMA-Factory 0.9.5's image preprocessing for Qwen-VL (BasePlugin + Qwen2VLPlugin._preprocess_image):
    regularize_base, then sides at least 28 and an aspect ratio of at most 200."""
    image = regularize_base(path, max_pixels, min_pixels)
    if min(image.width, image.height) < 28:
        image = image.resize((max(image.width, 28), max(image.height, 28)))
    if image.width / image.height > 200:
        image = image.resize((image.height * 180, image.height))
    if image.height / image.width > 200:
        image = image.resize((image.width, image.width * 180))
    return image

"""Audios given to chat (the API's input_audio parts, `/audio PATH` in `tunesmith chat`): base64 data (OpenAI's
input_audio), data: URLs, file:// URLs and local paths, decoded with PyAV to mono at the model's sampling rate.
Nothing is fetched from the network."""

from __future__ import annotations

import base64
import binascii
import io
import re
from pathlib import Path

from tunesmith.errors import TunesmithError

INLINE_HELP = (
    'send it as an input_audio part: {"type": "input_audio", "input_audio": {"data": "<base64 of the '
    'file>", "format": "wav"}}, or as a path to a local file'
)


class AudioInputError(TunesmithError):
    """An audio given for chat cannot be used: a network URL, bad base64, not audio, or a model without audio."""


def load_audio(source, sampling_rate: int, where: str = "audio"):
    """The decoded audio (float32 mono numpy array at sampling_rate) of raw bytes, a data: URL (base64), a file://
    URL or a local file path; `where` names the audio in errors (e.g. "messages[1].content[0].input_audio")."""
    if isinstance(source, Path):
        source = str(source)
    if isinstance(source, (bytes, bytearray)):
        return _decode(io.BytesIO(source), sampling_rate, where)
    if not isinstance(source, str) or not source.strip():
        raise AudioInputError(f"{where}: the audio is empty; {INLINE_HELP}")
    source = source.strip()
    scheme = source.split(":", 1)[0].lower() if re.match(r"[A-Za-z][A-Za-z0-9+.-]*:", source) else ""
    if scheme == "data":
        match = re.fullmatch(r"data:([^;,]*)((?:;[^;,]*)*),(.*)", source, re.DOTALL)
        if match is None or "base64" not in [p.strip().lower() for p in match[2].split(";")]:
            raise AudioInputError(f"{where}: only base64 data: URLs are accepted (data:audio/wav;base64,...)")
        return _decode(io.BytesIO(decode_base64(match[3], where)), sampling_rate, f"{where} (a data: URL)")
    if scheme == "file":
        from urllib.parse import unquote, urlparse
        from urllib.request import url2pathname

        parsed = urlparse(source)
        if parsed.netloc not in ("", "localhost"):
            raise AudioInputError(
                f"{where}: file:// URLs must name a file on this machine, not on host {parsed.netloc!r}"
            )
        return _file(Path(url2pathname(unquote(parsed.path))), sampling_rate, where)
    if scheme and len(scheme) > 1:  # http, https, s3, ...; a one-letter "scheme" is a Windows drive (C:\...)
        raise AudioInputError(
            f"{where}: {scheme}: URLs are not fetched (tunesmith never downloads audio); {INLINE_HELP}"
        )
    return _file(Path(source).expanduser(), sampling_rate, where)


def decode_base64(data: str, where: str) -> bytes:
    """OpenAI's input_audio data: the audio file's bytes in standard base64."""
    if not isinstance(data, str) or not data.strip():
        raise AudioInputError(f"{where}: `data` must hold the audio file's bytes in base64; {INLINE_HELP}")
    try:
        return base64.b64decode(re.sub(r"\s+", "", data), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise AudioInputError(
            f"{where}: the base64 does not decode ({exc}); encode the audio file's bytes with standard base64"
        ) from None


def _file(path: Path, sampling_rate: int, where: str):
    if not path.is_file():
        raise AudioInputError(f"{where}: no audio file {path} on the machine that runs the model; {INLINE_HELP}")
    return _decode(path, sampling_rate, f"{where} ({path})")


def _decode(source, sampling_rate: int, what: str):
    from tunesmith.data.audio import AudioDecodeError, decode_audio

    try:
        return decode_audio(source, sampling_rate)
    except AudioDecodeError as exc:
        raise AudioInputError(f"{what} is not audio PyAV can read: {exc}; send WAV, MP3, FLAC or OGG audio") from None

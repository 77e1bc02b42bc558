"""Images given to chat (the API's image_url parts, `/image PATH` in `tunesmith chat`, the web chat's upload):
data: URLs (base64), file:// URLs and local paths, decoded to PIL images. Nothing is fetched from the network."""

from __future__ import annotations

import base64
import binascii
import io
import re
from pathlib import Path

from tunesmith.errors import TunesmithError

# data:[<mime type>][;<parameter>]*;base64,<data>
DATA_URL = re.compile(r"data:(?P<mime>[^;,]*)(?P<params>(?:;[^;,]*)*),(?P<data>.*)", re.DOTALL | re.IGNORECASE)
INLINE_HELP = "send it inline as a data: URL (data:image/png;base64,...) or as a path to a local file"


class ImageInputError(TunesmithError):
    """An image given for chat cannot be used: a network URL, bad base64, not an image, or a text-only model."""


def load_image(source: str, where: str = "image"):
    """The fully decoded PIL image of a data: URL (base64), a file:// URL or a local file path; `where` names the
    image in errors (e.g. "messages[1].content[0].image_url")."""
    if not isinstance(source, str) or not source.strip():
        raise ImageInputError(f"{where}: the image URL is empty; {INLINE_HELP}")
    source = source.strip()
    scheme = source.split(":", 1)[0].lower() if re.match(r"[A-Za-z][A-Za-z0-9+.-]*:", source) else ""
    if scheme == "data":
        return _open(io.BytesIO(_decode(source, where)), f"{where} (a data: URL)")
    if scheme == "file":
        return _open_file(_file_url_path(source, where), where)
    if scheme and len(scheme) > 1:  # http, https, ftp, s3, ...; a one-letter "scheme" is a Windows drive (C:\...)
        raise ImageInputError(
            f"{where}: {scheme}: URLs are not fetched (tunesmith never downloads images); {INLINE_HELP}"
        )
    return _open_file(Path(source).expanduser(), where)


def _decode(url: str, where: str) -> bytes:
    match = DATA_URL.fullmatch(url)
    if match is None:
        raise ImageInputError(f"{where}: a data: URL needs a comma before its data (data:image/png;base64,...)")
    mime = match["mime"].strip().lower()
    if mime and not mime.startswith("image/"):
        raise ImageInputError(f"{where}: the data: URL holds {mime}, not an image (image/png, image/jpeg, ...)")
    if "base64" not in [param.strip().lower() for param in match["params"].split(";")]:
        raise ImageInputError(f"{where}: only base64 data: URLs are accepted (data:image/png;base64,...)")
    try:
        return base64.b64decode(re.sub(r"\s+", "", match["data"]), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ImageInputError(
            f"{where}: the data: URL's base64 does not decode ({exc}); encode the image file's "
            "bytes with standard base64"
        ) from None


def _file_url_path(url: str, where: str) -> Path:
    from urllib.parse import unquote, urlparse
    from urllib.request import url2pathname

    parsed = urlparse(url)
    if parsed.netloc not in ("", "localhost"):
        raise ImageInputError(
            f"{where}: file:// URLs must name a file on this machine (file:///path/to/image.png), "
            f"not on host {parsed.netloc!r}"
        )
    return Path(url2pathname(unquote(parsed.path)))


def _open_file(path: Path, where: str):
    if not path.is_file():
        raise ImageInputError(f"{where}: no image file {path} on the machine that runs the model; {INLINE_HELP}")
    return _open(path, f"{where} ({path})")


def _open(source, what: str):
    from PIL import Image, UnidentifiedImageError

    try:
        image = Image.open(source)
        image.load()  # decode now: a truncated or corrupt file fails here, not inside generation
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise ImageInputError(
            f"{what} is not an image PIL can read ({exc.__class__.__name__}: {str(exc)[:120]}); "
            "send a PNG, JPEG, GIF, WebP or BMP image"
        ) from None
    return image

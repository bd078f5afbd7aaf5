"""Photos: metadata removed before storage, and a small preview.

Uses Pillow, the standard imaging library of Python (maintained, wheels for
every platform, reads and writes JPEG, PNG, GIF and WebP). Everything here is
blocking and CPU-bound: the node calls it in a worker thread
(``trio.to_thread``). Decoding is bounded by ``max_pixels`` (Pillow's
decompression-bomb check, raised to an error here), so a small file that
claims a huge image is refused before its pixels are allocated.

What is kept of a photo: the pixels, turned upright by its EXIF orientation
(which is removed with the rest), the ICC colour profile, nothing else. A
JPEG that needs no turning is re-saved with its own quantisation tables
(``quality="keep"``), so it loses no quality to the stripping.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

#: Formats whose metadata is removed and of which a preview is made.
_FORMATS = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp", "GIF": "image/gif"}
_SNIFF = (
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
)


class ImageRefused(Exception):
    """The image is larger (in pixels) than the node decodes."""


def sniff_image(head: bytes) -> str | None:
    """The image type of a file by its first bytes (never the client's word)."""
    for magic, kind in _SNIFF:
        if head.startswith(magic):
            return kind
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    return None


@dataclass(frozen=True)
class PreviewImage:
    data: bytes
    type: str
    width: int
    height: int


@dataclass(frozen=True)
class Processed:
    #: A new file without metadata (None: store the upload as it is).
    stripped: Path | None
    preview: PreviewImage | None


def _open(path: Path, max_pixels: int) -> Image.Image:
    Image.MAX_IMAGE_PIXELS = max_pixels
    with warnings.catch_warnings():
        # Pillow warns past MAX_IMAGE_PIXELS and raises past twice that: refuse both.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(path)
            image.size  # noqa: B018 - the header is read; the size is known
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ImageRefused(f"the image is over {max_pixels} pixels") from exc
    if image.width * image.height > max_pixels:
        image.close()
        raise ImageRefused(f"the image is over {max_pixels} pixels")
    return image


def process(
    path: Path, out: Path, *, keep_exif: bool, preview_side: int, max_pixels: int
) -> Processed:
    """Strip ``path``'s metadata into ``out`` (unless ``keep_exif``) and make a preview.

    A file Pillow cannot read is left alone (stored as uploaded, no preview).
    Raises :class:`ImageRefused` for an image over ``max_pixels``.
    """
    try:
        image = _open(path, max_pixels)
    except ImageRefused:
        raise
    except (OSError, ValueError, SyntaxError, UnidentifiedImageError):
        return Processed(None, None)
    with image:
        fmt = image.format or ""
        if fmt not in _FORMATS:
            return Processed(None, None)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                image.load()
                stripped = None if keep_exif else _strip(image, fmt, out)
                preview = _preview(image, preview_side)
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombWarning):
            out.unlink(missing_ok=True)
            return Processed(None, None)
    return Processed(stripped, preview)


def _strip(image: Image.Image, fmt: str, out: Path) -> Path | None:
    if fmt == "GIF":
        return None  # GIF carries no EXIF; re-saving would flatten an animation
    icc = image.info.get("icc_profile")
    orientation = image.getexif().get(0x0112, 1)
    upright = ImageOps.exif_transpose(image) if orientation != 1 else image
    options: dict[str, object] = {}
    if icc:
        options["icc_profile"] = icc
    if fmt == "JPEG":
        if upright is image:
            options["quality"] = "keep"
        else:
            options["quality"] = 92
        options["subsampling"] = "keep" if upright is image else -1
        if options["subsampling"] == -1:
            del options["subsampling"]
    elif fmt == "WEBP":
        options["quality"] = 90
    # No exif= and no pnginfo=: Pillow writes neither EXIF nor text chunks.
    upright.save(out, format=fmt, **options)
    return out


def _preview(image: Image.Image, side: int) -> PreviewImage | None:
    if side <= 0:
        return None
    orientation = image.getexif().get(0x0112, 1)
    thumb = ImageOps.exif_transpose(image) if orientation != 1 else image.copy()
    thumb.thumbnail((side, side))
    has_alpha = thumb.mode in ("RGBA", "LA", "PA") or (
        thumb.mode == "P" and "transparency" in thumb.info
    )
    buffer = io.BytesIO()
    if has_alpha:
        thumb.convert("RGBA").save(buffer, format="PNG", optimize=True)
        kind = "image/png"
    else:
        thumb.convert("RGB").save(buffer, format="JPEG", quality=80)
        kind = "image/jpeg"
    return PreviewImage(buffer.getvalue(), kind, thumb.width, thumb.height)

"""Turn request bytes into RGB images, safely.

Images arrive as raw bytes (gRPC) or base64 strings (HTTP). Decoding is the
one place hostile input meets native code, so it is strict:

* only JPEG, PNG, WebP, GIF and BMP are opened (no TIFF/EPS/... surprises);
* the pixel count is read from the header and checked against ``max_pixels``
  *before* any pixel data is decoded (PIL's ``Image.open`` is lazy), and PIL's
  own decompression-bomb guard is turned into the same error;
* truncated or corrupt data fails here, not later inside the model thread.

Every failure is an :class:`ImageError` that names the item's index.
"""

from __future__ import annotations

import io
import warnings

from PIL import Image, ImageOps, UnidentifiedImageError

from services.input_rules import InputError, decode_base64

ALLOWED_FORMATS: tuple[str, ...] = ("JPEG", "PNG", "WEBP", "GIF", "BMP")
_WHITE = (255, 255, 255)


class ImageError(ValueError):
    """An image in a request could not be used; the message names its index (``images[i]``)."""

    def __init__(self, index: int, message: str) -> None:
        self.index = index
        self.reason = message
        super().__init__(f"images[{index}]: {message}")


def decode_image(data: bytes, index: int, max_pixels: int) -> Image.Image:
    """Decode encoded image bytes into a fully loaded RGB image.

    EXIF orientation is applied, GIF/WebP animations give their first frame,
    and transparency (RGBA, LA, palette with a transparent colour) is
    composited on white.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise ImageError(index, f"expected bytes, got {type(data).__name__}")
    if len(data) == 0:
        raise ImageError(index, "empty image data")
    try:
        with warnings.catch_warnings():
            # Above MAX_IMAGE_PIXELS PIL only warns; we check our own limit below.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            src = Image.open(io.BytesIO(bytes(data)), formats=ALLOWED_FORMATS)
    except Image.DecompressionBombError:
        raise ImageError(index, f"image is larger than the limit of {max_pixels} pixels") from None
    except UnidentifiedImageError:
        raise ImageError(
            index, "not a supported image (expected JPEG, PNG, WebP, GIF or BMP data)"
        ) from None
    except (OSError, ValueError, SyntaxError) as exc:  # PIL raises all of these on bad headers
        raise ImageError(index, f"corrupt image data ({exc})") from None

    try:
        width, height = src.size
        if width <= 0 or height <= 0:
            raise ImageError(index, f"image has an invalid size {width}x{height}")
        if width * height > max_pixels:
            raise ImageError(
                index, f"image is {width}x{height} = {width * height} pixels, over the limit of {max_pixels}"
            )
        try:
            if getattr(src, "is_animated", False):
                src.seek(0)
            src.load()
            upright = ImageOps.exif_transpose(src)
            return _to_rgb(upright if upright is not None else src)
        except ImageError:
            raise
        except Image.DecompressionBombError:
            raise ImageError(index, f"image is larger than the limit of {max_pixels} pixels") from None
        except (OSError, ValueError, SyntaxError, EOFError, MemoryError) as exc:
            raise ImageError(index, f"corrupt or truncated image data ({exc})") from None
    finally:
        # Release the parser; the returned image never shares its buffer (see _to_rgb).
        src.close()


def _to_rgb(img: Image.Image) -> Image.Image:
    """Convert any PIL mode to RGB, compositing transparency on white."""
    mode = img.mode
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        mode in ("P", "L", "RGB") and "transparency" in img.info
    )
    if has_alpha:
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, _WHITE + (255,))
        background.alpha_composite(rgba)
        return background.convert("RGB")
    if mode == "RGB":
        return img.copy()
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16/32-bit greyscale: scale to 8 bits instead of clipping.
        img = img.point(lambda v: v / 256).convert("L")
    return img.convert("RGB")


def decode_base64_image(value: str, index: int) -> bytes:
    """Decode a base64 image string (plain or a ``data:image/...;base64,`` URL) into bytes, by the rule
    both services share (:func:`services.input_rules.decode_base64`)."""
    try:
        return decode_base64(value)
    except InputError as exc:
        raise ImageError(index, str(exc)) from None

"""Image decoding: formats, transparency, EXIF orientation, limits and bad input."""

from __future__ import annotations

import base64
import io
import struct
import time
import zlib

import numpy as np
import pytest
from PIL import Image

from services.inference.images import ImageError, decode_base64_image, decode_image

LIMIT = 40_000_000


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def two_colour(width: int = 20, height: int = 10) -> Image.Image:
    """Left half red, right half blue."""
    img = Image.new("RGB", (width, height), (255, 0, 0))
    img.paste((0, 0, 255), (width // 2, 0, width, height))
    return img


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` followed by a tiny (wrong) IDAT."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "GIF", "BMP"])
def test_formats_decode_to_rgb(fmt):
    data = encode(two_colour(), fmt, **({"quality": 95} if fmt in ("JPEG", "WEBP") else {}))
    img = decode_image(data, 0, LIMIT)
    assert img.mode == "RGB" and img.size == (20, 10)
    left, right = np.asarray(img)[5, 2], np.asarray(img)[5, 17]
    assert left[0] > 200 and left[2] < 60, left
    assert right[2] > 200 and right[0] < 60, right


def test_rgba_is_composited_on_white():
    img = Image.new("RGBA", (4, 4), (255, 0, 0, 0))  # fully transparent red
    img.putpixel((0, 0), (255, 0, 0, 255))  # one opaque red pixel
    img.putpixel((1, 0), (255, 0, 0, 128))  # half-transparent red
    out = np.asarray(decode_image(encode(img, "PNG"), 0, LIMIT))
    assert tuple(out[3, 3]) == (255, 255, 255)
    assert tuple(out[0, 0]) == (255, 0, 0)
    assert out[0, 1][0] == 255 and 120 <= out[0, 1][1] <= 135  # pink: red half over white


def test_la_and_palette_transparency_become_rgb_on_white():
    la = Image.new("LA", (3, 3), (0, 0))  # black, transparent
    la.putpixel((0, 0), (0, 255))
    out = np.asarray(decode_image(encode(la, "PNG"), 1, LIMIT))
    assert tuple(out[2, 2]) == (255, 255, 255) and tuple(out[0, 0]) == (0, 0, 0)

    pal = Image.new("P", (3, 3), 0)
    pal.putpalette([0, 255, 0] + [0, 0, 255] + [0] * 762)
    pal.putpixel((1, 1), 1)
    data = encode(pal, "PNG", transparency=0)  # index 0 (green) is transparent
    out = np.asarray(decode_image(data, 2, LIMIT))
    assert tuple(out[0, 0]) == (255, 255, 255)
    assert tuple(out[1, 1]) == (0, 0, 255)


def test_palette_without_transparency_keeps_colours():
    pal = two_colour().convert("P", palette=Image.Palette.ADAPTIVE, colors=4)
    out = np.asarray(decode_image(encode(pal, "PNG"), 0, LIMIT))
    assert tuple(out[5, 2]) == (255, 0, 0) and tuple(out[5, 17]) == (0, 0, 255)


def test_greyscale_16_bit_is_scaled_not_clipped():
    grey = Image.fromarray(np.full((4, 4), 32768, dtype=np.uint16))
    out = np.asarray(decode_image(encode(grey, "PNG"), 0, LIMIT))
    assert 120 <= out[0, 0, 0] <= 135


def test_gif_gives_first_frame():
    frames = [Image.new("RGB", (8, 8), c) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=50)
    out = np.asarray(decode_image(buf.getvalue(), 0, LIMIT))
    assert tuple(out[4, 4]) == (255, 0, 0)


def test_exif_orientation_is_applied():
    img = two_colour(20, 10)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    out = decode_image(encode(img, "JPEG", exif=exif, quality=95), 0, LIMIT)
    assert out.size == (10, 20)
    arr = np.asarray(out)
    # after a 90 degree clockwise turn the left (red) half is on top
    assert arr[2, 5][0] > 200 and arr[2, 5][2] < 60
    assert arr[17, 5][2] > 200 and arr[17, 5][0] < 60


@pytest.mark.parametrize(
    "data, fragment",
    [
        (b"", "empty"),
        (b"definitely not an image", "not a supported image"),
        (b"\x89PNG\r\n\x1a\n" + b"\0" * 20, "images[7]"),
        (b"II*\x00" + b"\0" * 100, "not a supported image"),  # TIFF is not accepted
    ],
)
def test_bad_bytes_name_the_index(data, fragment):
    with pytest.raises(ImageError) as err:
        decode_image(data, 7, LIMIT)
    assert err.value.index == 7
    assert str(err.value).startswith("images[7]: ")
    assert fragment in str(err.value)


def test_truncated_jpeg_is_rejected():
    data = encode(Image.new("RGB", (64, 64), (10, 200, 30)), "JPEG")
    with pytest.raises(ImageError, match=r"images\[3\]: corrupt"):
        decode_image(data[: len(data) // 2], 3, LIMIT)


def test_pixel_limit_checked_from_header_before_decoding():
    ok = encode(Image.new("RGB", (100, 50), (1, 2, 3)), "PNG")
    assert decode_image(ok, 0, 5000).size == (100, 50)
    with pytest.raises(
        ImageError, match=r"images\[1\]: image is 100x51 = 5100 pixels, over the limit of 5000"
    ):
        decode_image(encode(Image.new("RGB", (100, 51)), "PNG"), 1, 5000)
    # a header claiming 60000x60000: refused at once, nothing decoded
    start = time.perf_counter()
    with pytest.raises(ImageError, match=r"images\[2\]: .*limit"):
        decode_image(png_header_only(60000, 60000), 2, LIMIT)
    # beyond PIL's own decompression-bomb threshold too (its error becomes ours)
    with pytest.raises(ImageError, match=r"images\[4\]: .*limit"):
        decode_image(png_header_only(200000, 200000), 4, 10**12)
    assert time.perf_counter() - start < 1.0


def test_base64_plain_data_url_urlsafe_and_whitespace():
    raw = encode(two_colour(), "PNG")
    std = base64.b64encode(raw).decode()
    assert decode_base64_image(std, 0) == raw
    assert decode_base64_image("data:image/png;base64," + std, 0) == raw
    assert decode_base64_image(base64.urlsafe_b64encode(raw).decode().rstrip("="), 0) == raw
    wrapped = "\n".join(std[i : i + 76] for i in range(0, len(std), 76))
    assert decode_base64_image(wrapped, 0) == raw


@pytest.mark.parametrize("value", ["", "!!!not base64!!!", "abcde", "data:image/png,notbase64"])
def test_bad_base64_names_the_index(value):
    with pytest.raises(ImageError, match=r"^images\[5\]: "):
        decode_base64_image(value, 5)


def test_base64_of_garbage_decodes_then_fails_as_image():
    data = decode_base64_image(base64.b64encode(b"hello world").decode(), 2)
    with pytest.raises(ImageError, match=r"images\[2\]"):
        decode_image(data, 2, LIMIT)

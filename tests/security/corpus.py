"""Hostile and unusual files, built on the spot: nothing is checked in, every byte is explained here.

Each entry is (name the client sends, the bytes, what the studio must answer). `refused` entries must
be turned away with the given code; `accepted` ones are legitimate photos in unusual encodings that
must be stored as a plain 8-bit sRGB still image with nothing else carried along.
"""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass

from PIL import Image

from tests.characters.images import jpeg_bytes, png_of_zeros


@dataclass(frozen=True)
class Sample:
    id: str
    filename: str
    content: bytes
    code: str | None  # the refusal code, or None when the photo must be accepted
    content_type: str = "image/jpeg"
    payload: bytes = b""  # bytes that must not survive into storage when accepted


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png(image: Image.Image, **save: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG", **save)
    return buffer.getvalue()


def html_named_jpg() -> bytes:
    return b"<!doctype html><html><body><script>alert(document.cookie)</script></body></html>"


def svg_with_script() -> bytes:
    return (
        b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="1024" height="1024">'
        b"<script>fetch('/api/v1/me')</script><rect width='1024' height='1024'/></svg>"
    )


def html_behind_png_signature() -> bytes:
    """A PNG signature followed by HTML: sniffers that look at 8 bytes call it an image."""
    return b"\x89PNG\r\n\x1a\n" + html_named_jpg()


def gif_javascript_polyglot() -> bytes:
    """`GIF89a` is also valid JavaScript: the classic GIF/JS polyglot."""
    return b"GIF89a/*\x00\x02\x00\x02\x00\x00\x00\x00*/=1;alert(1)//" + b"\x00" * 64 + b";"


def pdf_named_png() -> bytes:
    return b"%PDF-1.4\n1 0 obj<</Type/Catalog>>endobj\ntrailer<</Root 1 0 R>>\n%%EOF\n"


def zip_named_webp() -> bytes:
    buffer = io.BytesIO()
    import zipfile

    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("evil.sh", "rm -rf /")
    return buffer.getvalue()


ZIP_PAYLOAD = b"PK\x03\x04polyglot-archive-member"
PHP_PAYLOAD = b"<?php system($_GET['c']); ?>"


def jpeg_with_zip_appended() -> bytes:
    """A valid JPEG with an archive after its end marker (a JPEG/ZIP polyglot)."""
    return jpeg_bytes((640, 640)) + ZIP_PAYLOAD + b"\x00" * 32


def jpeg_with_php_comment() -> bytes:
    """A valid JPEG carrying PHP in its COM segment (the web-shell upload trick)."""
    image = jpeg_bytes((640, 640), color=(90, 90, 20))
    comment = b"\xff\xfe" + struct.pack(">H", len(PHP_PAYLOAD) + 2) + PHP_PAYLOAD
    return image[:2] + comment + image[2:]


def truncated_png() -> bytes:
    content = _png(Image.effect_noise((800, 800), 64).convert("RGB"))
    return content[: len(content) // 2]


def png_signature_only() -> bytes:
    return b"\x89PNG\r\n\x1a\n"


def real_decompression_bomb() -> bytes:
    """A complete, valid 10000 x 10000 PNG (100 megapixels, 100 MB decoded) in about 100 KB."""
    return png_of_zeros(10_000, 10_000)


def text_chunk_bomb() -> bytes:
    """A small valid PNG with a zTXt chunk that inflates to 64 MB of text."""
    image = _png(Image.new("RGB", (600, 600), (1, 2, 3)))
    compressed = zlib.compress(b"A" * (64 * 1024 * 1024), 9)
    ztxt = _png_chunk(b"zTXt", b"Comment\x00\x00" + compressed)
    # Insert right after IHDR (8-byte signature + 25-byte IHDR chunk).
    return image[:33] + ztxt + image[33:]


def huge_but_not_a_bomb() -> bytes:
    """8000 x 6000 (48 MP): under Pillow's bomb limit, over the studio's 40 MP."""
    return png_of_zeros(8000, 6000)


def long_thin_strip() -> bytes:
    """40000 x 500: an absurd aspect ratio, within the pixel limit but too short on one side."""
    return png_of_zeros(40_000, 500)


def sixteen_bit_rgb_png() -> bytes:
    """48-bit colour PNG written by hand (Pillow cannot write 16-bit RGB)."""
    width, height = 600, 600
    row = b"\x00" + b"\x80\x00\x40\x00\xff\xff" * width
    data = zlib.compress(row * height, 6)
    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", data)
        + _png_chunk(b"IEND", b"")
    )


def sixteen_bit_grey_png() -> bytes:
    return _png(Image.new("I;16", (600, 600), 40_000))


def cmyk_jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.new("CMYK", (640, 640), (0, 200, 200, 10)).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def animated_gif() -> bytes:
    frames = [Image.new("RGB", (640, 640), (index * 60, 0, 0)) for index in range(3)]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    return buffer.getvalue()


def animated_webp() -> bytes:
    frames = [Image.new("RGB", (640, 640), (0, index * 60, 0)) for index in range(3)]
    buffer = io.BytesIO()
    frames[0].save(buffer, "WEBP", save_all=True, append_images=frames[1:], duration=100, loop=0)
    return buffer.getvalue()


def animated_png() -> bytes:
    frames = [Image.new("RGB", (640, 640), (0, 0, index * 60)) for index in range(3)]
    return _png(frames[0], save_all=True, append_images=frames[1:], duration=100, loop=0)


def palette_png_with_transparency() -> bytes:
    image = Image.new("P", (600, 600), 1)
    image.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    return _png(image, transparency=0)


def tiff_named_jpg() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (640, 640), (5, 5, 5)).save(buffer, "TIFF")
    return buffer.getvalue()


def bmp_named_png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (640, 640), (5, 5, 5)).save(buffer, "BMP")
    return buffer.getvalue()


def refused_samples() -> list[Sample]:
    return [
        Sample("zero-bytes", "empty.jpg", b"", "empty"),
        Sample("html-named-jpg", "photo.jpg", html_named_jpg(), "unsupported_type", "text/html"),
        Sample("svg-with-script-named-png", "face.png", svg_with_script(), "unsupported_type", "image/png"),
        Sample("svg-named-webp", "face.webp", svg_with_script(), "unsupported_type", "image/webp"),
        Sample("html-behind-png-signature", "x.png", html_behind_png_signature(), "damaged", "image/png"),
        Sample(
            "gif-javascript-polyglot", "x.gif", gif_javascript_polyglot(), "unsupported_type", "image/gif"
        ),
        Sample("pdf-named-png", "scan.png", pdf_named_png(), "unsupported_type", "image/png"),
        Sample("zip-named-webp", "pack.webp", zip_named_webp(), "unsupported_type", "image/webp"),
        Sample("tiff-named-jpg", "scan.jpg", tiff_named_jpg(), "unsupported_type"),
        Sample("bmp-named-png", "paint.png", bmp_named_png(), "unsupported_type", "image/png"),
        Sample("png-signature-only", "cut.png", png_signature_only(), "unsupported_type", "image/png"),
        Sample("truncated-png", "half.png", truncated_png(), "damaged", "image/png"),
        Sample("decompression-bomb", "bomb.png", real_decompression_bomb(), "bomb", "image/png"),
        Sample("text-chunk-bomb", "ztxt.png", text_chunk_bomb(), "damaged", "image/png"),
        Sample("huge-dimensions", "huge.png", huge_but_not_a_bomb(), "too_many_pixels", "image/png"),
        Sample("long-thin-strip", "strip.png", long_thin_strip(), "too_small", "image/png"),
        Sample("animated-gif", "loop.gif", animated_gif(), "unsupported_type", "image/gif"),
    ]


def accepted_samples() -> list[Sample]:
    return [
        Sample("jpeg-with-zip-appended", "poly.jpg", jpeg_with_zip_appended(), None, payload=ZIP_PAYLOAD),
        Sample("jpeg-with-php-comment", "shell.php.jpg", jpeg_with_php_comment(), None, payload=PHP_PAYLOAD),
        Sample("sixteen-bit-rgb-png", "deep.png", sixteen_bit_rgb_png(), None, "image/png"),
        Sample("sixteen-bit-grey-png", "grey16.png", sixteen_bit_grey_png(), None, "image/png"),
        Sample("cmyk-jpeg", "print.jpg", cmyk_jpeg(), None),
        Sample("animated-webp", "loop.webp", animated_webp(), None, "image/webp"),
        Sample("animated-png", "loop.png", animated_png(), None, "image/png"),
        Sample(
            "palette-png-with-transparency", "pal.png", palette_png_with_transparency(), None, "image/png"
        ),
    ]

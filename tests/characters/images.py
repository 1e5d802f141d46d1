"""Real image files made on the spot with Pillow, for ingest, service and view tests."""

from __future__ import annotations

import io
import struct
import zlib

from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image

ORIENTATION = 0x0112
GPS_IFD = 0x8825


def jpeg_bytes(
    size: tuple[int, int] = (640, 512), *, color: tuple[int, int, int] = (200, 40, 40), **save: object
) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, "JPEG", quality=90, **save)
    return buffer.getvalue()


def jpeg_with_gps_and_orientation(size: tuple[int, int] = (800, 600)) -> bytes:
    """A landscape JPEG whose EXIF says 'rotate 90° clockwise' and where it was taken."""
    image = Image.new("RGB", size, (200, 40, 40))
    image.paste((0, 0, 255), (0, 0, 100, 100))  # a blue top-left corner shows where 'up' went
    exif = Image.Exif()
    exif[ORIENTATION] = 6
    exif[GPS_IFD] = {1: "N", 2: (52.0, 31.0, 12.0), 3: "E", 4: (13.0, 24.0, 0.0)}
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90, exif=exif.tobytes())
    return buffer.getvalue()


def png_bytes(size: tuple[int, int] = (600, 600), mode: str = "RGB", color: object = (10, 120, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, color).save(buffer, "PNG")  # type: ignore[arg-type]
    return buffer.getvalue()


def webp_bytes(size: tuple[int, int] = (600, 700)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (30, 30, 160)).save(buffer, "WEBP", quality=90)
    return buffer.getvalue()


def cmyk_jpeg_bytes(size: tuple[int, int] = (600, 600)) -> bytes:
    buffer = io.BytesIO()
    Image.new("CMYK", size, (0, 255, 255, 0)).save(buffer, "JPEG")
    return buffer.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares its size but carries no pixels: enough for checks made from the header."""
    return _png_signature_and_header(width, height) + _png_chunk(b"IEND", b"")


def png_of_zeros(width: int, height: int) -> bytes:
    """A complete, valid black greyscale PNG of any size, compressed to almost nothing."""
    compressor = zlib.compressobj(9)
    row = b"\x00" * (width + 1)  # filter byte + one byte per pixel
    data = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    return (
        _png_signature_and_header(width, height, color_type=0)
        + _png_chunk(b"IDAT", data)
        + _png_chunk(b"IEND", b"")
    )


def distinct_jpegs(count: int, size: tuple[int, int] = (640, 512)) -> list[bytes]:
    return [jpeg_bytes(size, color=(10 + index * 20 % 240, 90, 160)) for index in range(count)]


def upload(content: bytes, name: str, content_type: str = "image/jpeg") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, content, content_type=content_type)


def _png_signature_and_header(width: int, height: int, color_type: int = 2) -> bytes:
    header = struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return (
        struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    )

"""The ingest rules, checked with real files made in each test."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from characters.ingest import MAX_BYTES, ImageRejected, PreparedImage, prepare_image
from tests.characters import images


def prepare(content: bytes, name: str = "photo.jpg") -> PreparedImage:
    return prepare_image(io.BytesIO(content), filename=name, size=len(content))


def refusal(content: bytes, name: str) -> ImageRejected:
    with pytest.raises(ImageRejected) as caught:
        prepare(content, name)
    return caught.value


def stored(prepared: PreparedImage) -> Image.Image:
    prepared.image.seek(0)
    return Image.open(io.BytesIO(prepared.image.read()))


def test_it_accepts_a_jpeg_and_keeps_it_a_jpeg() -> None:
    prepared = prepare(images.jpeg_bytes((640, 512)))

    assert (prepared.extension, prepared.width, prepared.height) == (".jpg", 640, 512)
    assert stored(prepared).format == "JPEG"


def test_it_accepts_a_png() -> None:
    prepared = prepare(images.png_bytes(), "scan.png")

    assert stored(prepared).format == "PNG"


def test_it_accepts_a_webp() -> None:
    prepared = prepare(images.webp_bytes(), "still.webp")

    assert (stored(prepared).format, prepared.width, prepared.height) == ("WEBP", 600, 700)


def test_it_judges_the_type_by_content_not_by_name() -> None:
    prepared = prepare(images.png_bytes(), "really-a-png.jpg")

    assert prepared.extension == ".png"


def test_it_removes_the_gps_position_and_all_exif_from_the_stored_file() -> None:
    prepared = prepare(images.jpeg_with_gps_and_orientation())

    result = stored(prepared)
    assert dict(result.getexif()) == {}
    assert "exif" not in result.info
    assert b"Exif" not in stored_bytes(prepared)


def test_it_applies_the_exif_orientation() -> None:
    prepared = prepare(images.jpeg_with_gps_and_orientation((800, 600)))

    result = stored(prepared).convert("RGB")
    assert result.size == (600, 800)
    red, _green, blue = result.getpixel((590, 10))  # the blue corner turned to the top right
    assert blue > 200 and red < 60


def test_it_converts_a_16_bit_png_to_8_bits_without_clipping_it_to_white() -> None:
    prepared = prepare(images.png_bytes(mode="I;16", color=40000), "depth.png")

    result = stored(prepared)
    assert result.mode == "RGB"
    assert result.getpixel((0, 0)) == (156, 156, 156)  # 40000 / 256


def test_it_converts_a_cmyk_jpeg_to_rgb() -> None:
    prepared = prepare(images.cmyk_jpeg_bytes(), "print.jpg")

    result = stored(prepared)
    assert result.mode == "RGB"
    red, green, blue = result.getpixel((10, 10))
    assert red > 200 and green < 60 and blue < 60


def test_it_hashes_the_stored_bytes_so_the_same_upload_hashes_the_same() -> None:
    content = images.jpeg_with_gps_and_orientation()

    first, second = prepare(content), prepare(content)

    assert first.sha256 == second.sha256
    assert first.bytes == len(stored_bytes(first))


def test_it_makes_a_webp_thumbnail_at_most_256_px() -> None:
    prepared = prepare(images.jpeg_bytes((1024, 512)))

    thumbnail = Image.open(prepared.thumbnail)
    assert (thumbnail.format, thumbnail.size) == ("WEBP", (256, 128))


def test_it_makes_a_512_px_thumbnail_for_dense_screens() -> None:
    prepared = prepare(images.jpeg_bytes((1024, 512)))

    thumbnail = Image.open(prepared.thumbnail_large)
    assert (thumbnail.format, thumbnail.size) == ("WEBP", (512, 256))


def test_it_refuses_an_empty_file() -> None:
    error = refusal(b"", "empty.jpg")

    assert (error.code, error.message) == ("empty", "empty.jpg: the file is empty. Choose the photo again.")


def test_it_refuses_text_named_jpg() -> None:
    error = refusal(b"just some notes, not a photo\n" * 10, "notes.jpg")

    assert error.code == "unsupported_type"
    assert error.message == "notes.jpg: this is not a JPEG, PNG or WebP image. Convert it to one of those."


def test_it_refuses_an_svg_named_png() -> None:
    svg = b'<svg xmlns="http://www.w3.org/2000/svg" width="900" height="900"><rect width="900"/></svg>'

    error = refusal(svg, "vector.png")

    assert (error.code, error.filename) == ("unsupported_type", "vector.png")


def test_it_refuses_a_gif_even_though_pillow_could_read_it() -> None:
    buffer = io.BytesIO()
    Image.new("P", (600, 600)).save(buffer, "GIF")

    assert refusal(buffer.getvalue(), "anim.gif").code == "unsupported_type"


def test_it_refuses_a_truncated_file() -> None:
    content = noisy_jpeg()

    error = refusal(content[: len(content) // 2], "cut.jpg")

    assert error.message == "cut.jpg: the file is truncated or damaged and could not be read to the end."


def test_it_refuses_a_decompression_bomb_from_its_header_alone() -> None:
    error = refusal(images.png_header_only(100_000, 100_000), "bomb.png")

    assert error.code == "bomb"
    assert "decompression bomb" in error.message


def test_it_refuses_an_image_over_40_megapixels() -> None:
    error = refusal(images.png_of_zeros(8000, 6000), "huge.png")

    assert error.message == "huge.png: 8000 x 6000 is 48.0 megapixels; the limit is 40. Scale it down."


def test_it_refuses_an_image_under_512_px_on_the_short_side() -> None:
    error = refusal(images.jpeg_bytes((1200, 500)), "small.jpg")

    assert error.message == "small.jpg: 1200 x 500 is too small; the short side needs at least 512 px."


def test_it_refuses_a_file_over_20_mb_before_reading_it() -> None:
    with pytest.raises(ImageRejected) as caught:
        prepare_image(io.BytesIO(b"never read"), filename="raw.jpg", size=MAX_BYTES + 5 * 1024**2)

    assert caught.value.message == "raw.jpg: the file is 25.0 MB; the limit is 20 MB. Export it smaller."


def test_it_names_only_the_last_part_of_a_client_path() -> None:
    error = refusal(b"", "C:\\Users\\alice\\Pictures\\empty.jpg")

    assert error.filename == "empty.jpg"


def stored_bytes(prepared: PreparedImage) -> bytes:
    prepared.image.seek(0)
    return prepared.image.read()


def noisy_jpeg() -> bytes:
    """A JPEG with real detail, so cutting it in half loses scan data rather than padding."""
    image = Image.effect_noise((640, 640), 64).convert("RGB")
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()

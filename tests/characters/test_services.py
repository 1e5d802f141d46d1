"""Character and reference image services against the database and real stored files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.core.files.storage import default_storage
from PIL import Image

from characters import services
from characters.ingest import ImageRejected
from characters.models import Character, ReferenceImage
from characters.signals import reference_images_added
from studio.errors import ApplicationError, Conflict
from tests.characters import images
from tests.characters.factories import CharacterFactory, ReferenceImageFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def anna(alice: Any) -> Character:
    return services.character_create(owner=alice, name="Anna", trigger_word="ohwx_anna")


@pytest.fixture
def announcements() -> Any:
    received: list[Any] = []

    def receiver(sender: Any, character_id: Any, **kwargs: Any) -> None:
        received.append(character_id)

    reference_images_added.connect(receiver, weak=False)
    yield received
    reference_images_added.disconnect(receiver)


def test_it_creates_a_character_for_its_owner(alice: Any) -> None:
    character = services.character_create(
        owner=alice, name=" Anna ", trigger_word="ohwx_anna", auto_train=True
    )

    character.refresh_from_db()
    assert (character.owner, character.name, character.auto_train) == (alice, "Anna", True)


def test_it_refuses_a_second_character_with_the_same_name_for_one_owner(anna: Character, alice: Any) -> None:
    with pytest.raises(Conflict) as caught:
        services.character_create(owner=alice, name="Anna", trigger_word="ohwx_other")

    assert caught.value.fields == {
        "name": ["You already have a character called “Anna”. Choose another name."]
    }


def test_it_refuses_a_name_that_differs_from_another_only_in_case(anna: Character, alice: Any) -> None:
    with pytest.raises(Conflict) as caught:
        services.character_create(owner=alice, name="anna", trigger_word="ohwx_other")

    assert caught.value.code == "name_taken"
    assert "“Anna”" in caught.value.message
    assert Character.objects.filter(owner=alice).count() == 1


@pytest.mark.parametrize("name", ["\u200b\u200b", "\u200b\u200c\u200d\ufeff", " \u2060 "])
def test_it_refuses_a_name_made_only_of_invisible_characters(alice: Any, name: str) -> None:
    with pytest.raises(ApplicationError) as caught:
        services.character_create(owner=alice, name=name, trigger_word="ohwx_ghost")

    assert caught.value.fields == {
        "name": ["Give the character a name with letters or digits a person can see."]
    }
    assert not Character.objects.filter(owner=alice).exists()


def test_two_owners_may_use_the_same_character_name(anna: Character, bob: Any) -> None:
    services.character_create(owner=bob, name="Anna", trigger_word="ohwx_anna")

    assert Character.objects.filter(name="Anna").count() == 2


def test_it_refuses_a_trigger_word_with_spaces_or_capitals(alice: Any) -> None:
    with pytest.raises(ApplicationError) as caught:
        services.character_create(owner=alice, name="Anna", trigger_word="Anna Smith")

    assert "trigger_word" in caught.value.fields
    assert not Character.objects.exists()


def test_it_updates_only_the_given_fields(anna: Character) -> None:
    services.character_update(character=anna, description="Red hair, freckles")

    anna.refresh_from_db()
    assert (anna.name, anna.description) == ("Anna", "Red hair, freckles")


def test_renaming_onto_another_characters_name_is_refused(anna: Character, alice: Any) -> None:
    other = services.character_create(owner=alice, name="Bea", trigger_word="ohwx_bea")

    with pytest.raises(Conflict):
        services.character_update(character=other, name="Anna")


def test_it_adds_an_image_with_its_file_thumbnail_and_measurements(anna: Character) -> None:
    image = services.reference_image_add(
        character=anna, upload=images.upload(images.jpeg_bytes((640, 512)), "a.jpg")
    )

    image.refresh_from_db()
    assert image.file.name == f"characters/{anna.pk}/images/{image.sha256}.jpg"
    assert image.thumbnail.name == f"characters/{anna.pk}/thumbnails/{image.sha256}.webp"
    assert image.thumbnail_large.name == f"characters/{anna.pk}/thumbnails/{image.sha256}-512.webp"
    assert (image.width, image.height, image.original_filename) == (640, 512, "a.jpg")
    assert default_storage.size(image.file.name) == image.bytes


def test_the_stored_file_has_no_gps_position(anna: Character) -> None:
    image = services.reference_image_add(
        character=anna, upload=images.upload(images.jpeg_with_gps_and_orientation(), "trip.jpg")
    )

    with default_storage.open(image.file.name, "rb") as stored:
        assert dict(Image.open(stored).getexif()) == {}


def test_it_refuses_an_image_already_in_the_character(anna: Character) -> None:
    content = images.jpeg_bytes()
    services.reference_image_add(character=anna, upload=images.upload(content, "first.jpg"))

    with pytest.raises(ImageRejected) as caught:
        services.reference_image_add(character=anna, upload=images.upload(content, "again.jpg"))

    assert caught.value.message == "again.jpg: this image is already in the character (as first.jpg)."
    assert anna.images.count() == 1


def test_a_refused_duplicate_leaves_no_stray_file_in_storage(anna: Character, isolated_media: Path) -> None:
    content = images.jpeg_bytes()
    services.reference_image_add(character=anna, upload=images.upload(content, "first.jpg"))

    with pytest.raises(ImageRejected):
        services.reference_image_add(character=anna, upload=images.upload(content, "again.jpg"))

    assert len([path for path in isolated_media.rglob("*") if path.is_file()]) == 3  # image + 2 thumbnails


def test_it_refuses_an_image_beyond_the_per_character_maximum(anna: Character, settings: Any) -> None:
    settings.TRAINING_MAX_IMAGES = 3
    ReferenceImageFactory.create_batch(3, character=anna)

    with pytest.raises(ImageRejected) as caught:
        services.reference_image_add(character=anna, upload=images.upload(images.jpeg_bytes(), "fourth.jpg"))

    assert caught.value.code == "too_many_images"
    assert anna.images.count() == 3


def test_a_batch_of_eight_good_and_two_bad_files_keeps_the_eight(anna: Character) -> None:
    good = [images.upload(content, f"good-{n}.jpg") for n, content in enumerate(images.distinct_jpegs(8))]
    bad = [
        images.upload(b"not an image", "notes.jpg"),
        images.upload(images.jpeg_bytes((300, 300)), "tiny.jpg"),
    ]

    report = services.reference_images_add_many(character=anna, uploads=[*good[:4], *bad, *good[4:]])

    assert anna.images.count() == 8
    assert [image.original_filename for image in report.added] == [f"good-{n}.jpg" for n in range(8)]
    assert [(rejected.filename, rejected.code) for rejected in report.rejected] == [
        ("notes.jpg", "unsupported_type"),
        ("tiny.jpg", "too_small"),
    ]


def test_a_batch_announces_the_added_images_once_after_commit(
    anna: Character, announcements: list[Any], django_capture_on_commit_callbacks: Any
) -> None:
    uploads = [images.upload(content, f"{n}.jpg") for n, content in enumerate(images.distinct_jpegs(3))]

    with django_capture_on_commit_callbacks(execute=True):
        services.reference_images_add_many(character=anna, uploads=uploads)

    assert announcements == [anna.pk]


def test_a_batch_with_nothing_kept_announces_nothing(
    anna: Character, announcements: list[Any], django_capture_on_commit_callbacks: Any
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        services.reference_images_add_many(character=anna, uploads=[images.upload(b"", "empty.jpg")])

    assert announcements == []


def test_the_announcement_waits_for_the_surrounding_transaction_to_commit(
    anna: Character, announcements: list[Any], django_capture_on_commit_callbacks: Any
) -> None:
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        services.reference_image_add(character=anna, upload=images.upload(images.jpeg_bytes(), "a.jpg"))

    assert announcements == []
    assert len(callbacks) == 2  # the announcement and the queueing of the face analysis


def test_a_failing_listener_does_not_fail_the_upload(
    anna: Character, django_capture_on_commit_callbacks: Any
) -> None:
    def broken(**kwargs: Any) -> None:
        raise RuntimeError("queue is down")

    reference_images_added.connect(broken, weak=False)
    try:
        with django_capture_on_commit_callbacks(execute=True):
            services.reference_image_add(character=anna, upload=images.upload(images.jpeg_bytes(), "a.jpg"))
    finally:
        reference_images_added.disconnect(broken)

    assert anna.images.count() == 1


def test_it_saves_a_trimmed_caption(anna: Character) -> None:
    image = ReferenceImageFactory(character=anna)

    services.reference_image_update_caption(image=image, caption="  [trigger] smiling  ")

    image.refresh_from_db()
    assert image.caption == "[trigger] smiling"


def test_a_captioners_captions_fill_only_the_photos_still_without_one(anna: Character) -> None:
    bare, captioned = (
        ReferenceImageFactory(character=anna),
        ReferenceImageFactory(character=anna, caption="[trigger]"),
    )
    made = {
        bare.sha256: "[trigger],  a woman\n outside",
        captioned.sha256: "[trigger], ignored",
        "f" * 64: "x",
    }

    assert services.reference_images_fill_captions(character=anna, captions=made) == 1
    assert services.reference_images_fill_captions(character=anna, captions=made) == 0  # already filled

    bare.refresh_from_db()
    captioned.refresh_from_db()
    assert (bare.caption, bare.caption_auto) == ("[trigger], a woman outside", True)
    assert (captioned.caption, captioned.caption_auto) == ("[trigger]", False)


def test_a_captioners_caption_is_cut_at_a_word_to_the_caption_limit(anna: Character) -> None:
    bare = ReferenceImageFactory(character=anna)

    services.reference_images_fill_captions(character=anna, captions={bare.sha256: "word " * 300})

    bare.refresh_from_db()
    assert len(bare.caption) <= 1000 and bare.caption.endswith("word")


def test_it_refuses_a_caption_over_1000_characters(anna: Character) -> None:
    image = ReferenceImageFactory(character=anna)

    with pytest.raises(ApplicationError) as caught:
        services.reference_image_update_caption(image=image, caption="x" * 1001)

    assert caught.value.code == "caption_too_long"


def test_deleting_an_image_removes_its_row_and_files(
    anna: Character, django_capture_on_commit_callbacks: Any
) -> None:
    image = services.reference_image_add(character=anna, upload=images.upload(images.jpeg_bytes(), "a.jpg"))

    with django_capture_on_commit_callbacks(execute=True):
        services.reference_image_delete(image=image)

    assert not ReferenceImage.objects.filter(pk=image.pk).exists()
    assert not default_storage.exists(image.file.name)
    assert not default_storage.exists(image.thumbnail.name)
    assert not default_storage.exists(image.thumbnail_large.name)


def test_deleting_a_character_removes_its_images_and_its_storage_folder(
    anna: Character, isolated_media: Path, django_capture_on_commit_callbacks: Any
) -> None:
    services.reference_image_add(character=anna, upload=images.upload(images.jpeg_bytes(), "a.jpg"))
    default_storage.save(
        f"characters/{anna.pk}/loras/run.safetensors", images.upload(b"weights", "run.safetensors")
    )

    with django_capture_on_commit_callbacks(execute=True):
        services.character_delete(character=anna)

    assert not Character.objects.filter(pk=anna.pk).exists()
    assert not ReferenceImage.objects.exists()
    assert not (isolated_media / "characters" / str(anna.pk)).exists()


def test_deleting_a_character_leaves_other_characters_files_alone(
    anna: Character, alice: Any, django_capture_on_commit_callbacks: Any
) -> None:
    other = CharacterFactory(owner=alice)
    kept = services.reference_image_add(
        character=other, upload=images.upload(images.jpeg_bytes(), "keep.jpg")
    )

    with django_capture_on_commit_callbacks(execute=True):
        services.character_delete(character=anna)

    assert default_storage.exists(kept.file.name)


def test_images_are_stored_in_the_s3_bucket_when_one_is_configured(anna: Character, s3_storage: Any) -> None:
    image = services.reference_image_add(character=anna, upload=images.upload(images.webp_bytes(), "s3.webp"))

    with default_storage.open(image.file.name, "rb") as stored:
        assert Image.open(stored).format == "WEBP"

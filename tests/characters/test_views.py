"""The character pages: who may see what, and what each form does."""

from __future__ import annotations

import io
from typing import Any

import pytest
from django.core.files.storage import default_storage
from django.test import Client
from django.urls import reverse
from PIL import Image

from characters import services
from characters.models import Character, ReferenceImage
from tests.characters import images
from tests.characters.factories import CharacterFactory, ReferenceImageFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def anna(alice: Any) -> Character:
    return CharacterFactory(owner=alice, name="Anna", trigger_word="ohwx_anna")


@pytest.fixture
def photo(anna: Character) -> ReferenceImage:
    return services.reference_image_add(
        character=anna, upload=images.upload(images.jpeg_bytes(), "beach.jpg")
    )


def client_for(user: Any, *, csrf: bool = False) -> Client:
    client = Client(enforce_csrf_checks=csrf)
    client.force_login(user)
    return client


def character_urls(character: Character, image: ReferenceImage) -> dict[str, tuple[str, str]]:
    """Every page of one character, with the method that reads or writes it."""
    ids = [character.pk]
    both = [character.pk, image.pk]
    return {
        "detail": ("get", reverse("characters:detail", args=ids)),
        "edit form": ("get", reverse("characters:edit", args=ids)),
        "edit": ("post", reverse("characters:edit", args=ids)),
        "delete form": ("get", reverse("characters:delete", args=ids)),
        "delete": ("post", reverse("characters:delete", args=ids)),
        "upload": ("post", reverse("characters:upload", args=ids)),
        "caption": ("post", reverse("characters:caption", args=both)),
        "captions form": ("get", reverse("characters:captions", args=ids)),
        "captions": ("post", reverse("characters:captions", args=ids)),
        "image delete": ("post", reverse("characters:image_delete", args=both)),
        "thumbnail": ("get", reverse("characters:thumbnail", args=both)),
        "image file": ("get", reverse("characters:image_file", args=both)),
    }


PAGES = [
    "detail",
    "edit form",
    "edit",
    "delete form",
    "delete",
    "upload",
    "caption",
    "captions form",
    "captions",
    "image delete",
    "thumbnail",
    "image file",
]
WRITES = ["edit", "delete", "upload", "caption", "captions", "image delete"]


@pytest.mark.parametrize("page", [*PAGES, "list", "create"])
def test_anonymous_visitors_are_sent_to_log_in(page: str, anna: Character, photo: ReferenceImage) -> None:
    urls = {
        **character_urls(anna, photo),
        "list": ("get", reverse("characters:list")),
        "create": ("post", reverse("characters:create")),
    }
    method, url = urls[page]

    response = getattr(Client(), method)(url)

    assert response.status_code == 302
    assert response.url.startswith(reverse("login") + "?next=")


@pytest.mark.parametrize("page", PAGES)
def test_bob_gets_404_on_every_page_of_alices_character(
    page: str, anna: Character, photo: ReferenceImage, bob: Any
) -> None:
    method, url = character_urls(anna, photo)[page]

    response = getattr(client_for(bob), method)(
        url, {"name": "Mine", "trigger_word": "ohwx_mine", "caption": "x"}
    )

    assert response.status_code == 404
    anna.refresh_from_db()
    photo.refresh_from_db()
    assert (anna.name, photo.caption) == ("Anna", "")


@pytest.mark.parametrize("page", [*WRITES, "create"])
def test_every_form_refuses_a_post_without_a_csrf_token(
    page: str, anna: Character, photo: ReferenceImage, alice: Any
) -> None:
    urls = {**character_urls(anna, photo), "create": ("post", reverse("characters:create"))}
    _, url = urls[page]

    response = client_for(alice, csrf=True).post(url, {"name": "Changed", "trigger_word": "ohwx_changed"})

    assert response.status_code == 403
    assert Character.objects.get(pk=anna.pk).name == "Anna"
    assert ReferenceImage.objects.filter(pk=photo.pk).exists()


def test_the_list_shows_only_my_characters_with_their_image_counts(
    anna: Character, alice: Any, bob: Any
) -> None:
    ReferenceImageFactory.create_batch(2, character=anna)
    CharacterFactory(owner=bob, name="Bobs secret")

    response = client_for(alice).get(reverse("characters:list"))

    assert response.status_code == 200
    assert [(c.name, c.image_count) for c in response.context["characters"]] == [("Anna", 2)]
    assert b"Bobs secret" not in response.content
    assert b"No LoRA yet" in response.content


def test_creating_a_character_leads_to_its_page(alice: Any) -> None:
    response = client_for(alice).post(
        reverse("characters:create"), {"name": "Bea", "trigger_word": "ohwx_bea", "description": "Curly hair"}
    )

    character = Character.objects.get(owner=alice, name="Bea")
    assert response.status_code == 302
    assert response.url == reverse("characters:detail", args=[character.pk])


def test_a_bad_trigger_word_is_shown_beside_the_field(alice: Any) -> None:
    response = client_for(alice).post(
        reverse("characters:create"), {"name": "Bea", "trigger_word": "Bea Smith"}
    )

    assert response.status_code == 400
    assert "trigger_word" in response.context["form"].errors
    assert not Character.objects.exists()


def test_a_taken_name_is_shown_beside_the_name_field(anna: Character, alice: Any) -> None:
    response = client_for(alice).post(
        reverse("characters:create"), {"name": "Anna", "trigger_word": "ohwx_two"}
    )

    assert response.status_code == 400
    assert response.context["form"].errors["name"] == [
        "You already have a character called “Anna”. Choose another name."
    ]


def test_editing_a_character_saves_its_fields(anna: Character, alice: Any) -> None:
    response = client_for(alice).post(
        reverse("characters:edit", args=[anna.pk]),
        {"name": "Anna K", "trigger_word": "ohwx_annak", "description": "", "auto_train": "on"},
    )

    anna.refresh_from_db()
    assert response.status_code == 302
    assert (anna.name, anna.trigger_word, anna.auto_train) == ("Anna K", "ohwx_annak", True)


def test_the_delete_page_asks_before_deleting(anna: Character, alice: Any) -> None:
    response = client_for(alice).get(reverse("characters:delete", args=[anna.pk]))

    assert response.status_code == 200
    assert b"cannot be undone" in response.content
    assert Character.objects.filter(pk=anna.pk).exists()


def test_confirming_deletion_removes_the_character_and_its_files(
    anna: Character, photo: ReferenceImage, alice: Any, django_capture_on_commit_callbacks: Any
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        response = client_for(alice).post(reverse("characters:delete", args=[anna.pk]))

    assert response.url == reverse("characters:list")
    assert not Character.objects.filter(pk=anna.pk).exists()
    assert not default_storage.exists(photo.file.name)


def test_the_detail_page_shows_the_upload_form_and_the_image_grid(
    anna: Character, photo: ReferenceImage, alice: Any
) -> None:
    response = client_for(alice).get(reverse("characters:detail", args=[anna.pk]))

    content = response.content.decode()
    assert 'enctype="multipart/form-data"' in content
    assert 'name="files" multiple' in content
    assert reverse("characters:thumbnail", args=[anna.pk, photo.pk]) in content
    assert "/static/js/upload.js" in content


def test_a_plain_form_upload_answers_a_page_listing_each_file(anna: Character, alice: Any) -> None:
    files = [images.upload(content, f"good-{n}.jpg") for n, content in enumerate(images.distinct_jpegs(2))]
    files.append(images.upload(b"hello", "notes.jpg"))

    response = client_for(alice).post(reverse("characters:upload", args=[anna.pk]), {"files": files})

    content = response.content.decode()
    assert response.status_code == 200
    assert "2 images added, 1 refused" in content
    assert "notes.jpg</strong>: this is not a JPEG, PNG or WebP image" in content
    assert anna.images.count() == 2


def test_a_script_upload_answers_json_for_each_file(anna: Character, alice: Any) -> None:
    response = client_for(alice).post(
        reverse("characters:upload", args=[anna.pk]),
        {"files": [images.upload(images.jpeg_bytes((600, 400)), "small.jpg")]},
        headers={"accept": "application/json"},
    )

    assert response.status_code == 400
    assert response.json() == {
        "added": [],
        "rejected": [
            {
                "filename": "small.jpg",
                "code": "too_small",
                "message": "small.jpg: 600 x 400 is too small; the short side needs at least 512 px.",
            }
        ],
        "image_count": 0,
    }


def test_a_script_upload_of_a_good_file_answers_its_thumbnail(anna: Character, alice: Any) -> None:
    response = client_for(alice).post(
        reverse("characters:upload", args=[anna.pk]),
        {"files": [images.upload(images.webp_bytes(), "ok.webp")]},
        headers={"accept": "application/json"},
    )

    image = anna.images.get()
    assert response.status_code == 200
    assert response.json()["added"][0]["thumbnail_url"] == reverse(
        "characters:thumbnail", args=[anna.pk, image.pk]
    )


def test_an_upload_without_files_asks_for_some(anna: Character, alice: Any) -> None:
    response = client_for(alice).post(reverse("characters:upload", args=[anna.pk]), follow=True)

    assert b"Choose at least one JPEG, PNG or WebP image" in response.content


def test_saving_a_caption_returns_to_the_image(anna: Character, photo: ReferenceImage, alice: Any) -> None:
    response = client_for(alice).post(
        reverse("characters:caption", args=[anna.pk, photo.pk]), {"caption": "[trigger] on a beach"}
    )

    photo.refresh_from_db()
    assert photo.caption == "[trigger] on a beach"
    assert response.url.endswith(f"#image-{photo.pk}")


def test_the_caption_editor_saves_every_photos_caption_at_once(anna: Character, alice: Any) -> None:
    first, second = (
        services.reference_image_add(character=anna, upload=images.upload(content, f"{n}.jpg"))
        for n, content in enumerate(images.distinct_jpegs(2))
    )

    response = client_for(alice).post(
        reverse("characters:captions", args=[anna.pk]),
        {
            f"caption-{first.pk}": "[trigger] smiling",
            f"caption-{second.pk}": " [trigger] outdoors ",
            "save": "1",
        },
    )

    assert response.status_code == 302
    assert dict(anna.images.values_list("original_filename", "caption")) == {
        "0.jpg": "[trigger] smiling",
        "1.jpg": "[trigger] outdoors",
    }


def test_apply_to_all_gives_every_photo_the_one_caption(anna: Character, alice: Any) -> None:
    for n, content in enumerate(images.distinct_jpegs(3)):
        services.reference_image_add(character=anna, upload=images.upload(content, f"{n}.jpg"))

    client_for(alice).post(
        reverse("characters:captions", args=[anna.pk]),
        {"all_caption": "[trigger], studio portrait", "apply_to_all": "1"},
    )

    assert set(anna.images.values_list("caption", flat=True)) == {"[trigger], studio portrait"}


def test_apply_to_all_with_no_caption_written_clears_nothing_and_says_why(
    anna: Character, photo: ReferenceImage, alice: Any
) -> None:
    services.reference_image_update_caption(image=photo, caption="[trigger] on a beach")

    response = client_for(alice).post(
        reverse("characters:captions", args=[anna.pk]), {"all_caption": " ", "apply_to_all": "1"}
    )

    assert response.status_code == 400
    assert "Write the caption to give every photo" in response.content.decode()
    photo.refresh_from_db()
    assert photo.caption == "[trigger] on a beach"


def test_the_grid_offers_the_512_px_thumbnail_for_dense_screens(
    anna: Character, photo: ReferenceImage, alice: Any
) -> None:
    thumbnail = reverse("characters:thumbnail", args=[anna.pk, photo.pk])

    page = client_for(alice).get(reverse("characters:detail", args=[anna.pk])).content.decode()
    large = client_for(alice).get(thumbnail + "?size=512")

    assert f'srcset="{thumbnail} 256w, {thumbnail}?size=512 512w"' in page
    with Image.open(io.BytesIO(b"".join(large.streaming_content))) as served:
        assert max(served.size) == 512


def test_deleting_an_image_removes_it(anna: Character, photo: ReferenceImage, alice: Any) -> None:
    client_for(alice).post(reverse("characters:image_delete", args=[anna.pk, photo.pk]))

    assert not anna.images.exists()


def test_the_thumbnail_is_served_to_its_owner_as_a_private_webp(
    anna: Character, photo: ReferenceImage, alice: Any
) -> None:
    response = client_for(alice).get(reverse("characters:thumbnail", args=[anna.pk, photo.pk]))

    assert response.status_code == 200
    assert response["Content-Type"] == "image/webp"
    assert response["Cache-Control"].startswith("private")
    assert b"".join(response.streaming_content)[:4] == b"RIFF"


def test_an_image_under_another_characters_url_is_not_found(
    anna: Character, photo: ReferenceImage, alice: Any
) -> None:
    other = CharacterFactory(owner=alice)

    response = client_for(alice).get(reverse("characters:thumbnail", args=[other.pk, photo.pk]))

    assert response.status_code == 404


def test_the_home_page_sends_signed_in_users_to_their_characters(alice: Any) -> None:
    response = client_for(alice).get("/")

    assert response.url == reverse("characters:list")


def test_the_home_page_invites_visitors_to_sign_up_or_log_in(db: None) -> None:
    response = Client().get("/")

    assert reverse("signup").encode() in response.content
    assert reverse("login").encode() in response.content


def test_a_caption_written_by_the_captioner_is_shown_marked_auto_and_editable(
    anna: Character, photo: ReferenceImage, alice: Any
) -> None:
    made = {photo.sha256: "[trigger], a woman outside"}
    services.reference_images_fill_captions(character=anna, captions=made)

    detail = client_for(alice).get(reverse("characters:detail", args=[anna.pk])).content.decode()
    editor = client_for(alice).get(reverse("characters:captions", args=[anna.pk])).content.decode()

    assert '<span class="caption-auto">Auto</span> [trigger], a woman outside' in detail
    assert "[trigger], a woman outside</textarea>" in editor and 'class="caption-auto"' in editor

from __future__ import annotations

import hashlib

import factory
from django.core.files.base import ContentFile
from django.utils import timezone

from characters import consent
from characters.models import Character, PhotoConsent, ReferenceImage
from tests.studio.factories import UserFactory


class CharacterFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Character
        skip_postgeneration_save = True

    owner = factory.SubFactory(UserFactory)
    name = factory.Sequence(lambda n: f"Character {n}")
    trigger_word = factory.Sequence(lambda n: f"ohwx_char{n}")
    # Its owner has agreed to the consent statement, as every upload needs; `with_consent=False` not.
    with_consent = factory.RelatedFactory(
        "tests.characters.factories.PhotoConsentFactory", factory_related_name="character"
    )


class PhotoConsentFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = PhotoConsent

    character = factory.SubFactory(CharacterFactory, with_consent=None)
    given_by = factory.LazyAttribute(lambda record: record.character.owner)
    given_at = factory.LazyFunction(timezone.now)
    wording_version = consent.CURRENT_VERSION
    basis = "self"


class ReferenceImageFactory(factory.django.DjangoModelFactory):
    """A stored reference image. Its bytes are a stand-in; ingest tests make real images."""

    class Meta:
        model = ReferenceImage

    class Params:
        content = factory.Sequence(lambda n: f"image bytes {n}".encode())

    character = factory.SubFactory(CharacterFactory)
    original_filename = factory.Sequence(lambda n: f"photo-{n}.jpg")
    sha256 = factory.LazyAttribute(lambda image: hashlib.sha256(image.content).hexdigest())
    width = 1024
    height = 1024
    bytes = factory.LazyAttribute(lambda image: len(image.content))
    file = factory.LazyAttribute(lambda image: ContentFile(image.content, name=image.original_filename))

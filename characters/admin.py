from __future__ import annotations

from django.contrib import admin
from django.utils.html import format_html
from django.utils.safestring import SafeString

from characters.models import Character, ReferenceImage
from studio.transfer import download_url

THUMBNAIL_LINK_SECONDS = 600


def thumbnail_tag(image: ReferenceImage, size: int = 96) -> SafeString | str:
    """The image's thumbnail through a short-lived link: media is never public."""
    name = image.thumbnail.name or image.file.name
    if not name:
        return "-"
    return format_html(
        '<img src="{}" alt="{}" width="{}" style="object-fit:cover;aspect-ratio:1;border-radius:4px">',
        download_url(name, THUMBNAIL_LINK_SECONDS),
        image.original_filename,
        size,
    )


class ReferenceImageInline(admin.TabularInline):
    model = ReferenceImage
    extra = 0
    fields = ("thumbnail_preview", "original_filename", "width", "height", "bytes", "caption")
    readonly_fields = ("thumbnail_preview", "original_filename", "width", "height", "bytes")
    show_change_link = True

    def has_add_permission(self, request, obj=None):  # type: ignore[no-untyped-def]
        return False  # photos arrive through the ingest service (web upload, API, command)

    @admin.display(description="photo")
    def thumbnail_preview(self, image: ReferenceImage) -> SafeString | str:
        return thumbnail_tag(image)


@admin.register(Character)
class CharacterAdmin(admin.ModelAdmin):
    list_display: tuple[str, ...] = (
        "name",
        "owner",
        "trigger_word",
        "auto_train",
        "image_count",
        "created_at",
    )
    list_select_related = ("owner",)
    list_filter = ("auto_train", "created_at")
    search_fields = ("=id", "name", "trigger_word", "owner__username")
    raw_id_fields = ("owner",)
    inlines = [ReferenceImageInline]

    @admin.display(description="photos")
    def image_count(self, character: Character) -> int:
        return character.images.count()


@admin.register(ReferenceImage)
class ReferenceImageAdmin(admin.ModelAdmin):
    list_display = (
        "thumbnail_preview",
        "original_filename",
        "character",
        "width",
        "height",
        "bytes",
        "created_at",
    )
    list_select_related = ("character",)
    search_fields = ("=id", "sha256", "original_filename", "character__name")
    raw_id_fields = ("character",)
    readonly_fields = ("thumbnail_preview", "file", "thumbnail", "sha256", "width", "height", "bytes")

    def has_add_permission(self, request):  # type: ignore[no-untyped-def]
        return False

    @admin.display(description="photo")
    def thumbnail_preview(self, image: ReferenceImage) -> SafeString | str:
        return thumbnail_tag(image, size=64)

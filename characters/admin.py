from __future__ import annotations

from django.contrib import admin
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from characters.models import Character, DatasetReport, ReferenceImage
from characters.selectors import dataset_report_get, dataset_report_is_current
from studio.admin import ExtensibleAdmin
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
    fields = ("thumbnail_preview", "original_filename", "width", "height", "bytes", "face_check", "caption")
    readonly_fields = ("thumbnail_preview", "original_filename", "width", "height", "bytes", "face_check")
    show_change_link = True

    def has_add_permission(self, request, obj=None):  # type: ignore[no-untyped-def]
        return False  # photos arrive through the ingest service (web upload, API, command)

    @admin.display(description="photo")
    def thumbnail_preview(self, image: ReferenceImage) -> SafeString | str:
        return thumbnail_tag(image)

    @admin.display(description="face check")
    def face_check(self, image: ReferenceImage) -> SafeString | str:
        report = getattr(image.character, "dataset_report", None)
        verdict = report.photos.get(str(image.pk)) if report is not None else None
        if verdict is None:
            return "not checked yet"
        if not verdict["flags"]:
            return "no problem found"
        return format_html_join("", "<p>{}</p>", ((flag["message"],) for flag in verdict["flags"]))


@admin.register(Character)
class CharacterAdmin(ExtensibleAdmin):
    """Other apps add to it with `CharacterAdmin.extension_register` (training: runs, the current LoRA)."""

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
    readonly_fields = ("consent_record", "dataset_report_summary")

    @admin.display(description="consent")
    def consent_record(self, character: Character) -> str:
        record = getattr(character, "consent", None)
        if record is None:
            return "none recorded: photos cannot be uploaded"
        return (
            f"{record.get_basis_display()}: agreed by {record.given_by} on {record.given_at:%Y-%m-%d %H:%M} "
            f"(statement {record.wording_version})"
        )

    @admin.display(description="dataset report")
    def dataset_report_summary(self, character: Character) -> SafeString | str:
        report = dataset_report_get(character)
        if report is None:
            return "not computed yet"
        return format_html(
            "<p><strong>{}</strong> / 100 · {} of {} photos without a problem · a face in {}{}</p>{}",
            report.score,
            report.usable,
            report.photo_count,
            report.with_face,
            "" if dataset_report_is_current(character, report) else " · updating",
            _warnings_html(report),
        )

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


def _warnings_html(report: DatasetReport) -> SafeString:
    return format_html_join("", "<p>⚠ {}</p>", ((warning["message"],) for warning in report.warnings))

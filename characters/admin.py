from __future__ import annotations

from django.contrib import admin

from characters.models import Character, ReferenceImage


class ReferenceImageInline(admin.TabularInline):
    model = ReferenceImage
    extra = 0
    fields = ("original_filename", "width", "height", "bytes", "caption")
    readonly_fields = ("original_filename", "width", "height", "bytes")


@admin.register(Character)
class CharacterAdmin(admin.ModelAdmin):
    list_display = ("name", "owner", "trigger_word", "auto_train", "created_at")
    list_select_related = ("owner",)
    search_fields = ("id", "name", "trigger_word", "owner__username")
    raw_id_fields = ("owner",)
    inlines = [ReferenceImageInline]


@admin.register(ReferenceImage)
class ReferenceImageAdmin(admin.ModelAdmin):
    list_display = ("original_filename", "character", "width", "height", "bytes", "created_at")
    list_select_related = ("character",)
    search_fields = ("id", "sha256", "character__name")
    raw_id_fields = ("character",)
    readonly_fields = ("file", "thumbnail", "sha256", "width", "height", "bytes")

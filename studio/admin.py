"""The project's admin: the user admin, and how an app adds to another app's admin without registering it
again (`AdminExtension`), so that each model is registered once, by the app that owns it, and to the admin
index (`admin_index_panel_register`), which the project's template draws without naming any app."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from django.contrib import admin
from django.contrib.admin.options import IS_POPUP_VAR, InlineModelAdmin
from django.contrib.auth.admin import UserAdmin as BaseUserAdmin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html_join
from django.utils.safestring import SafeString

from studio.models import User


@dataclass(frozen=True)
class AdminExtension:
    """What an app adds to another app's model admin: inlines, list columns, bulk actions, and annotations
    the columns read (one query for the whole page).

    Columns are functions of one object, actions functions of (model admin, request, queryset); describe
    both with `@admin.display` / `@admin.action` as on a model admin.
    """

    inlines: Sequence[type[InlineModelAdmin[Any, Any]]] = ()
    list_display: Sequence[Callable[[Any], Any]] = ()
    actions: Sequence[Callable[[admin.ModelAdmin[Any], HttpRequest, QuerySet[Any]], None]] = ()
    annotate: Callable[[QuerySet[Any]], QuerySet[Any]] | None = None


class ExtensibleAdmin(admin.ModelAdmin):
    """A model admin other apps extend with `extension_register`, from their own admin module."""

    extensions: ClassVar[list[AdminExtension]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.extensions = []

    @classmethod
    def extension_register(cls, extension: AdminExtension) -> None:
        if extension not in cls.extensions:  # registering the same extension again adds nothing
            cls.extensions.append(extension)

    def get_inlines(self, request: HttpRequest, obj: Any = None) -> list[Any]:
        extra = [inline for extension in self.extensions for inline in extension.inlines]
        return [*super().get_inlines(request, obj), *extra]

    def get_list_display(self, request: HttpRequest) -> list[Any]:
        extra = [column for extension in self.extensions for column in extension.list_display]
        return [*super().get_list_display(request), *extra]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        queryset = super().get_queryset(request)
        for extension in self.extensions:
            if extension.annotate is not None:
                queryset = extension.annotate(queryset)
        return queryset

    def get_actions(self, request: HttpRequest) -> dict[str, Any]:
        actions: dict[str, Any] = super().get_actions(request)
        if self.actions is None or IS_POPUP_VAR in request.GET:
            return actions  # as the admin offers none there
        for extension in self.extensions:
            for action in extension.actions:
                name = action.__name__
                description = getattr(action, "short_description", name.replace("_", " "))
                actions[name] = (action, name, description)
        return actions


@admin.register(User)
class UserAdmin(ExtensibleAdmin, BaseUserAdmin):
    list_display: tuple[str, ...] = ("username", "email", "is_staff", "monthly_gpu_budget_usd", "date_joined")
    fieldsets = (
        *(BaseUserAdmin.fieldsets or ()),
        ("GPU budget", {"fields": ("monthly_gpu_budget_usd", "pod_training_allowed")}),
    )


# --- The admin index -------------------------------------------------------------------------

# Panels drawn above the index's model list, in registration order (training: its operator summary).
_index_panels: list[Callable[[], SafeString]] = []


def admin_index_panel_register(panel: Callable[[], SafeString]) -> None:
    if panel not in _index_panels:
        _index_panels.append(panel)


def admin_index_panels() -> SafeString:
    return format_html_join("", "{}", ((panel(),) for panel in _index_panels))

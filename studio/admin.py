from __future__ import annotations

from django.contrib import admin
from django.contrib.auth.admin import UserAdmin as BaseUserAdmin

from studio.models import User


@admin.register(User)
class UserAdmin(BaseUserAdmin):
    list_display: tuple[str, ...] = ("username", "email", "is_staff", "monthly_gpu_budget_usd", "date_joined")
    fieldsets = (*(BaseUserAdmin.fieldsets or ()), ("GPU budget", {"fields": ("monthly_gpu_budget_usd",)}))

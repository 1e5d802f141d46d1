"""`{% admin_index_panels %}`: what the apps add to the admin index (studio/admin.py)."""

from __future__ import annotations

from django import template
from django.utils.safestring import SafeString

from studio import admin

register = template.Library()


@register.simple_tag
def admin_index_panels() -> SafeString:
    return admin.admin_index_panels()

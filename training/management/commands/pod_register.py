"""`manage.py pod_register NAME --url URL --token-file FILE [--price USD] [--gpu-ids 0]`: an AI Toolkit UI
the studio neither starts nor stops (one on a machine of your own, or the stand-in of `manage.py demo
--pod`) registered as a pod, or the pod of that name pointed at it again. The token is read from a file:
on the command line every user of the machine would see it (`ps`)."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from studio.errors import ApplicationError
from training.services import pod_register


class Command(BaseCommand):
    help = __doc__

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name")
        parser.add_argument("--url", required=True, help="the UI's base URL, e.g. http://10.0.0.5:8675")
        parser.add_argument(
            "--token-file", required=True, type=Path, help="a file holding its AI_TOOLKIT_AUTH"
        )
        parser.add_argument("--price", default="0", help="USD per hour its GPU costs (default 0)")
        parser.add_argument("--gpu-ids", default="0", help="the UI queue runs are put on")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            price = Decimal(options["price"])
        except InvalidOperation as exc:
            raise CommandError(
                f"--price must be a number of USD per hour, not {options['price']!r}."
            ) from exc
        token = _token(options["token_file"])
        try:
            pod = pod_register(
                name=options["name"],
                ui_url=options["url"],
                token=token,
                hourly_price_usd=price,
                gpu_ids=options["gpu_ids"],
            )
        except ApplicationError as exc:
            raise CommandError(exc.message) from exc
        self.stdout.write(
            f"Pod {pod.name} registered: its UI at {pod.ui_url}, GPU queue {pod.gpu_ids}, "
            f"${pod.hourly_price_usd}/h. Its token is stored encrypted."
        )


def _token(path: Path) -> str:
    try:
        token = path.read_text().strip()
    except OSError as exc:
        raise CommandError(f"Cannot read the token file {path}: {exc.strerror}.") from exc
    if not token:
        raise CommandError(f"The token file {path} is empty: put the UI's AI_TOOLKIT_AUTH in it.")
    return token

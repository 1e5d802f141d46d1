"""`manage.py pod_create NAME --template ID --gpu TYPE [--price USD] [--gpu-ids 0]`: a pod for pod mode,
created from a RunPod pod template (AI Toolkit's) through REST v2, with a new UI token, and registered."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from training.runpod_rest import RunPodRestError
from training.services import pod_create


class Command(BaseCommand):
    help = __doc__

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name")
        parser.add_argument("--template", required=True, help="RunPod pod template id (AI Toolkit's)")
        parser.add_argument("--gpu", required=True, help='RunPod GPU type id, e.g. "NVIDIA GeForce RTX 4090"')
        parser.add_argument("--price", help="USD per hour; default: the cost RunPod answers")
        parser.add_argument("--gpu-ids", default="0", help="the UI queue runs are put on")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            price = Decimal(options["price"]) if options["price"] else None
        except InvalidOperation as exc:
            raise CommandError(
                f"--price must be a number of USD per hour, not {options['price']!r}."
            ) from exc
        try:
            pod = pod_create(
                name=options["name"],
                template_id=options["template"],
                gpu_type_id=options["gpu"],
                hourly_price_usd=price,
                gpu_ids=options["gpu_ids"],
            )
        except RunPodRestError as exc:
            raise CommandError(f"RunPod did not create the pod: {exc}") from exc
        self.stdout.write(
            f"Pod {pod.name} created on RunPod as {pod.runpod_pod_id} (${pod.hourly_price_usd}/h), UI at "
            f"{pod.ui_url}; marked running once RunPod and its UI say so. Its token is stored encrypted."
        )

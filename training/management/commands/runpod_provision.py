"""Make RunPod match the settings: the worker's serverless template, its network volume and the endpoint.

    python manage.py runpod_provision --dry-run   # print the plan as a diff, change nothing
    python manage.py runpod_provision             # create or update what differs, print the ids
    python manage.py runpod_provision --check     # exit 2 when RunPod differs (for CI or cron)

Resources are found by name (RUNPOD_PROVISION_NAME), so running it again changes nothing. The API key and
the worker's secrets come from the environment only; no option takes a secret, and no secret is printed.
Exit codes: 0 done (or no drift), 1 an error (the message says what to fix), 2 drift found by --check.
"""

from __future__ import annotations

import os
from argparse import ArgumentParser
from collections.abc import Mapping
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from training import provisioning
from training.runpod_rest import RunPodRestClient, RunPodRestError

EXIT_DRIFT = 2


class Command(BaseCommand):
    help = (
        "Create or update RunPod's serverless template, network volume and endpoint for the worker from the "
        "settings (REST v2), and print the ids to put in the environment. Exit codes: 0 done, 1 error, "
        f"{EXIT_DRIFT} drift (--check)."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument(
            "--dry-run", action="store_true", help="Print the plan as a diff; change nothing."
        )
        parser.add_argument(
            "--check", action="store_true", help=f"Change nothing; exit {EXIT_DRIFT} when RunPod differs."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        client = RunPodRestClient.from_settings()
        try:
            desired = provisioning.desired_state(environ=os.environ)
            plan = provisioning.plan_changes(client, desired)
            self.stdout.write("\n".join(provisioning.render(plan)))
            if options["check"] or options["dry_run"]:
                self._report_only(plan, check=options["check"])
                return
            self._print_ids(provisioning.apply_plan(client, plan))
        except (provisioning.ProvisionError, RunPodRestError) as exc:
            raise CommandError(str(exc)) from exc
        finally:
            client.close()

    def _report_only(self, plan: provisioning.Plan, *, check: bool) -> None:
        known = {step.kind: step.id for step in plan.steps if step.id}
        if known.get("endpoint"):
            self._print_ids(known)
        if check and plan.drift:
            raise CommandError(
                "RunPod differs from the settings (above): run `manage.py runpod_provision` to apply them.",
                returncode=EXIT_DRIFT,
            )
        self.stdout.write(
            "No drift: RunPod matches the settings." if not plan.drift else "Dry run: nothing changed."
        )

    def _print_ids(self, ids: Mapping[str, str | None]) -> None:
        self.stdout.write("\nPut this in the studio's environment:")
        self.stdout.write(f"RUNPOD_ENDPOINT_ID={ids['endpoint']}")
        others = ", ".join(f"{kind} {resource_id}" for kind, resource_id in ids.items() if kind != "endpoint")
        if others:
            self.stdout.write(f"(for reference: {others})")

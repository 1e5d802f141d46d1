from django.db import migrations, models
from django.db.models import Q


def settle_ended_runs(apps, schema_editor):
    """Ended runs are settled, except those the sweep still polls for RunPod's execution time: completed,
    with a job, no execution time yet and a poll due (what the sweep used to look for)."""
    TrainingRun = apps.get_model("training", "TrainingRun")
    ended = TrainingRun.objects.filter(status__in=["completed", "failed", "cancelled"])
    cost_unread = Q(status="completed", execution_ms__isnull=True, next_poll_at__isnull=False) & ~Q(runpod_job_id="")
    ended.exclude(cost_unread).update(cost_state="settled")


class Migration(migrations.Migration):
    dependencies = [
        ("training", "0005_event_announced"),
    ]

    operations = [
        migrations.AddField(
            model_name="trainingrun",
            name="cost_state",
            field=models.CharField(
                choices=[("pending", "Pending"), ("settled", "Settled")], default="pending", max_length=8
            ),
        ),
        migrations.RunPython(settle_ended_runs, migrations.RunPython.noop),
        migrations.RemoveIndex(model_name="trainingrun", name="run_status_next_poll_idx"),
        migrations.AddIndex(
            model_name="trainingrun",
            index=models.Index(
                condition=models.Q(("cost_state", "pending")),
                fields=["next_poll_at"],
                name="run_cost_pending_poll_idx",
            ),
        ),
    ]

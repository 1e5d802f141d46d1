from django.db import migrations, models
from django.db.models import F, Q


def split_due_times(apps, schema_editor):
    """A pending run's `next_poll_at` was when the sweep sends it to RunPod: that is now `submit_due_at`."""
    TrainingRun = apps.get_model("training", "TrainingRun")
    TrainingRun.objects.filter(status="pending").update(submit_due_at=F("next_poll_at"), next_poll_at=None)


def join_due_times(apps, schema_editor):
    TrainingRun = apps.get_model("training", "TrainingRun")
    TrainingRun.objects.filter(status="pending").update(next_poll_at=F("submit_due_at"))


class Migration(migrations.Migration):
    dependencies = [
        ("training", "0007_run_token_derived"),
    ]

    operations = [
        migrations.AddField(
            model_name="trainingrun",
            name="submit_due_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.RunPython(split_due_times, join_due_times),
        migrations.AddIndex(
            model_name="trainingrun",
            index=models.Index(condition=Q(("status", "pending")), fields=["submit_due_at"], name="run_submit_due_idx"),
        ),
    ]

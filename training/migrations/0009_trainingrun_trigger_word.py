from django.db import migrations, models
from django.db.models import OuterRef, Subquery


def from_the_character(apps, schema_editor):
    """Runs made before the field existed get their character's trigger word as it is now: the best
    record there is of what they trained on."""
    TrainingRun = apps.get_model("training", "TrainingRun")
    Character = apps.get_model("characters", "Character")
    TrainingRun.objects.update(
        trigger_word=Subquery(Character.objects.filter(pk=OuterRef("character_id")).values("trigger_word")[:1])
    )


class Migration(migrations.Migration):
    dependencies = [
        ("characters", "0005_character_name_unique_ignoring_case"),
        ("training", "0008_run_submit_due_at"),
    ]

    operations = [
        migrations.AddField(
            model_name="trainingrun",
            name="trigger_word",
            field=models.CharField(
                default="",
                help_text="The character's trigger word when the run started: the LoRA answers to this one, "
                "even after the character's is changed.",
                max_length=32,
            ),
            preserve_default=False,
        ),
        migrations.RunPython(from_the_character, migrations.RunPython.noop),
    ]

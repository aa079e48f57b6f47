import json
from pathlib import Path

from django.db import migrations, models


def fill_native_resolution(apps, schema_editor):
    """Read the size of base models registered from diffusers folders (a copy of the rule in
    training.runs.services.detect_native_resolution, as a migration must not depend on code that changes)."""
    BaseModel = apps.get_model("training", "BaseModel")
    for model in BaseModel.objects.filter(source_type="folder", native_resolution__isnull=True):
        try:
            sample_size = json.loads((Path(model.source) / "unet" / "config.json").read_text()).get("sample_size")
            blocks = json.loads((Path(model.source) / "vae" / "config.json").read_text()).get("block_out_channels")
        except (OSError, ValueError, AttributeError):
            continue  # a folder this machine cannot read: the kind's usual size applies
        if isinstance(sample_size, list) and sample_size:
            sample_size = sample_size[0]
        if type(sample_size) is not int or not isinstance(blocks, list) or not blocks:
            continue
        size = sample_size * 2 ** (len(blocks) - 1)
        if 16 <= size <= 2048 and size % 8 == 0:
            BaseModel.objects.filter(pk=model.pk).update(native_resolution=size)


class Migration(migrations.Migration):
    dependencies = [
        ("training", "0001_initial"),
    ]

    operations = [
        migrations.AddField(
            model_name="basemodel",
            name="native_resolution",
            field=models.PositiveIntegerField(
                blank=True, null=True,
                help_text="The size in pixels the model was trained at, read from a diffusers folder's config when "
                          "it is registered. Empty: the kind's usual size (512 for SD1.5, 1024 for SDXL)."),
        ),
        migrations.RunPython(fill_native_resolution, migrations.RunPython.noop),
    ]

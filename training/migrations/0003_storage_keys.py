"""Runs, LoRAs and base models stop naming paths of one machine.

The files of each run that this machine still holds (its old folder MODELS_DIR/runs/<id>: log, samples,
checkpoints, LoRA files) are uploaded to the artifacts storage under runs/<id>/, and the LoRA rows get their keys
and sha256. Base models under MODELS_DIR become paths relative to it. What this machine cannot read stays as it
was: the job then says how to register it again (manage.py register_model --upload).
"""

import hashlib
from pathlib import Path

from django.db import migrations, models


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1024 * 1024), b""):
            digest.update(block)
    return digest.hexdigest()


def to_storage(apps, schema_editor):
    from django.conf import settings
    from django.core.files import File
    from django.core.files.storage import storages

    storage = storages["artifacts"]
    models_dir = Path(settings.MODELS_DIR)
    TrainingRun = apps.get_model("training", "TrainingRun")
    LoraModel = apps.get_model("training", "LoraModel")
    BaseModel = apps.get_model("training", "BaseModel")
    for pk in TrainingRun.objects.values_list("pk", flat=True).iterator():
        folder = models_dir / "runs" / str(pk)
        if not folder.is_dir():
            continue
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            key = f"runs/{pk}/{path.relative_to(folder).as_posix()}"
            with path.open("rb") as fh:
                storage.save(key, File(fh, name=path.name))
    for lora in LoraModel.objects.all():
        changed = []
        for field in ("diffusers_file", "kohya_file"):
            value = getattr(lora, field)
            if not value.startswith("/") or lora.training_run_id is None:
                continue
            path, folder = Path(value), models_dir / "runs" / str(lora.training_run_id)
            if path.is_file() and path.is_relative_to(folder):
                setattr(lora, field, f"runs/{lora.training_run_id}/{path.relative_to(folder).as_posix()}")
                setattr(lora, field.replace("_file", "_sha256"), _sha256(path))
                changed += [field, field.replace("_file", "_sha256")]
        if changed:
            lora.save(update_fields=changed)
    for model in BaseModel.objects.filter(source_type__in=["folder", "single_file"]):
        path = Path(model.source)
        if path.is_absolute() and path.is_relative_to(models_dir):
            model.source = path.relative_to(models_dir).as_posix()
            model.save(update_fields=["source"])


class Migration(migrations.Migration):

    dependencies = [
        ('training', '0002_basemodel_native_resolution'),
    ]

    operations = [
        migrations.RemoveField(
            model_name='trainingrun',
            name='output_dir',
        ),
        migrations.AddField(
            model_name='basemodel',
            name='digest',
            field=models.CharField(blank=True, help_text="sha256 of a stored model's manifest: the key of the workers' local caches.", max_length=64),
        ),
        migrations.AddField(
            model_name='loramodel',
            name='diffusers_sha256',
            field=models.CharField(blank=True, max_length=64),
        ),
        migrations.AddField(
            model_name='loramodel',
            name='kohya_sha256',
            field=models.CharField(blank=True, max_length=64),
        ),
        migrations.AlterField(
            model_name='basemodel',
            name='source',
            field=models.CharField(help_text="Where every GPU machine finds the model, never a path of one machine: the storage prefix of a stored model (base-models/<name>/<digest>), a path relative to each machine's MODELS_DIR, or a hub id. Register with `manage.py register_model`, which checks it.", max_length=1000),
        ),
        migrations.AlterField(
            model_name='basemodel',
            name='source_type',
            field=models.CharField(choices=[('stored', 'Stored once in storage (every worker downloads and caches it)'), ('folder', "Diffusers folder under each machine's MODELS_DIR"), ('single_file', "Checkpoint file under each machine's MODELS_DIR"), ('hub', 'Hub id (machines that can reach a hub)')], default='stored', max_length=12),
        ),
        migrations.AlterField(
            model_name='loramodel',
            name='diffusers_file',
            field=models.CharField(help_text='Key of the diffusers-format .safetensors in the artifacts storage (written by the training run; not editable).', max_length=500),
        ),
        migrations.AlterField(
            model_name='loramodel',
            name='kohya_file',
            field=models.CharField(blank=True, help_text='Key of the kohya-format .safetensors (A1111, ComfyUI) in the artifacts storage.', max_length=500),
        ),
        migrations.RunPython(to_storage, migrations.RunPython.noop, elidable=True),
    ]

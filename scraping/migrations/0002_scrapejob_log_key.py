"""ScrapeJob.log_file (an absolute path on whichever machine crawled) becomes log_key (a key in the
artifacts storage). Logs this machine can still read are uploaded under their new key; the others are
dropped from the row (the file, if it exists on another machine, stays there untouched)."""

from pathlib import Path

from django.db import migrations, models


def upload_logs(apps, schema_editor):
    from django.core.files import File
    from django.core.files.storage import storages

    ScrapeJob = apps.get_model("scraping", "ScrapeJob")
    storage = storages["artifacts"]
    for pk, path in ScrapeJob.objects.exclude(log_file="").values_list("pk", "log_file").iterator():
        source = Path(path)
        if not source.is_file():
            continue
        key = f"scrapes/{pk}/log.txt"  # scraping.jobs.log_key, as it was when this was written
        with source.open("rb") as fh:
            name = storage.save(key, File(fh, name=source.name))
        ScrapeJob.objects.filter(pk=pk).update(log_key=name)


class Migration(migrations.Migration):

    dependencies = [
        ("scraping", "0001_initial"),
    ]

    operations = [
        migrations.AddField(
            model_name="scrapejob",
            name="log_key",
            field=models.CharField(blank=True, help_text="The crawl log's key in the artifacts storage, once uploaded.",
                                   max_length=300),
        ),
        migrations.RunPython(upload_logs, migrations.RunPython.noop, elidable=True),
        migrations.RemoveField(
            model_name="scrapejob",
            name="log_file",
        ),
    ]

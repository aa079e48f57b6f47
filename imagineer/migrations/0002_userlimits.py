import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('imagineer', '0001_initial'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name='UserLimits',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('max_active_training', models.PositiveIntegerField(blank=True, help_text='Training runs this user may have queued or running at once. Empty: the site default; 0: none.', null=True, verbose_name='training runs')),
                ('max_active_labeling', models.PositiveIntegerField(blank=True, help_text='Labeling jobs this user may have queued or running at once. Empty: the site default; 0: none.', null=True, verbose_name='labeling jobs')),
                ('max_active_scraping', models.PositiveIntegerField(blank=True, help_text='Scrapes this user may have queued or running at once. Empty: the site default; 0: none.', null=True, verbose_name='scrapes')),
                ('max_active_generation', models.PositiveIntegerField(blank=True, help_text='Generations this user may have queued or running at once. Empty: the site default; 0: none.', null=True, verbose_name='generations')),
                ('note', models.CharField(blank=True, help_text='Why this user has other limits (staff only).', max_length=300)),
                ('updated_at', models.DateTimeField(auto_now=True)),
                ('user', models.OneToOneField(on_delete=django.db.models.deletion.CASCADE, related_name='job_limits', to=settings.AUTH_USER_MODEL)),
            ],
            options={
                'verbose_name': 'job limits',
                'verbose_name_plural': 'job limits',
            },
        ),
    ]

from django.apps import AppConfig


class ImagineerConfig(AppConfig):
    name = "imagineer"
    verbose_name = "Imagineer"
    default_auto_field = "django.db.models.BigAutoField"

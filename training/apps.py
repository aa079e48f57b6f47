from django.apps import AppConfig


class TrainingConfig(AppConfig):
    name = "training"
    verbose_name = "Training and generation"

    def ready(self) -> None:
        from .generation.hooks import register as register_generation
        from .runs.hooks import register as register_runs

        register_runs()
        register_generation()

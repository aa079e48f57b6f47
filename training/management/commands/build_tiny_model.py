from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from training.basemodels import BaseModelInvalid, base_model_register, base_model_set_default
from training.models import BaseModel

TINY_NAME = "tiny"


def tiny_model_dir() -> Path:
    return Path(settings.MODELS_DIR) / "base" / TINY_NAME


class Command(BaseCommand):
    help = (
        "Build the tiny deterministic SD1.5-shaped model (tiny UNet, VAE and CLIP text encoder with a byte-level "
        "tokenizer) under MODELS_DIR/base/tiny, store it once in the artifacts storage (every worker downloads it "
        "from there) and register it as base model 'tiny'. Idempotent on any machine: the same build is the same "
        "stored model. It is the default base model until a real default is registered."
    )

    def add_arguments(self, parser):
        parser.add_argument("--if-missing", action="store_true",
                            help="Only build when the folder is missing (it is still registered).")
        parser.add_argument("--seed", type=int, default=0, help="Seed of the random weights (default 0).")

    def handle(self, *args, **options):
        folder = tiny_model_dir()
        built = False
        if options["if_missing"] and (folder / "model_index.json").is_file():
            self.stdout.write(f"The tiny model is already at {folder}.")
        else:
            from training.ml.tiny import build_tiny_pipeline  # pulls in torch and diffusers

            self.stdout.write(f"Building the tiny model in {folder}…")
            build_tiny_pipeline(folder, seed=options["seed"])
            built = True
        other_default = BaseModel.objects.filter(is_default=True).exclude(name=TINY_NAME).exists()
        try:
            model = base_model_register(name=TINY_NAME, source=str(folder), kind="sd15", source_type="folder",
                                        upload=True,
                                        description="Tiny random SD1.5-shaped model for tests and demos.")
        except BaseModelInvalid as exc:
            raise CommandError(str(exc)) from exc
        if not other_default:
            base_model_set_default(model=model)
        role = "the default base model" if model.is_default else "registered (another model is the default)"
        self.stdout.write(self.style.SUCCESS(f"{'Built' if built else 'Kept'} base model 'tiny': {role}."))

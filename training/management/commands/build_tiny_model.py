from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from training.basemodels import BaseModelInvalid, base_model_register, base_model_set_default
from training.models import BaseModel

TINY_NAME = "tiny"


FAMILY_LABELS = {"sd15": "SD1.5", "sd2": "SD2.x (v-prediction)", "sdxl": "SDXL", "flux": "Flux.1 dev"}


def tiny_name(family: str) -> str:
    return TINY_NAME if family == "sd15" else f"{TINY_NAME}-{family}"


def tiny_model_dir(family: str = "sd15") -> Path:
    return Path(settings.MODELS_DIR) / "base" / tiny_name(family)


class Command(BaseCommand):
    help = (
        "Build a tiny deterministic model of one family from config, with random weights and tokenizers made in "
        "memory (--family sd15: UNet, VAE and CLIP text encoder; sd2: the same with SD2's linear projections and "
        "v-prediction; sdxl: two text encoders and size conditioning; flux: a Flux.1-dev transformer, a 4-channel "
        "VAE, CLIP-L and a T5 encoder with its own unigram tokenizer) under MODELS_DIR/base/, store it once in the "
        "artifacts storage (every worker downloads it from there) and register it as base model 'tiny' (sd15) or "
        "'tiny-<family>'. Idempotent on any machine: the same build is the same stored model. The SD1.5 one is the "
        "default base model until a real default is registered."
    )

    def add_arguments(self, parser):
        parser.add_argument("--if-missing", action="store_true",
                            help="Only build when the folder is missing (it is still registered).")
        parser.add_argument("--seed", type=int, default=0, help="Seed of the random weights (default 0).")
        parser.add_argument("--family", choices=sorted(FAMILY_LABELS), default="sd15",
                            help="Model family to build (default sd15, registered as 'tiny').")

    def handle(self, *args, **options):
        family = options["family"]
        name = tiny_name(family)
        folder = tiny_model_dir(family)
        built = False
        if options["if_missing"] and (folder / "model_index.json").is_file():
            self.stdout.write(f"The tiny model is already at {folder}.")
        else:
            from training.ml.tiny import build_tiny_pipeline  # pulls in torch and diffusers

            self.stdout.write(f"Building the tiny model in {folder}…")
            build_tiny_pipeline(folder, seed=options["seed"], kind=family)
            built = True
        other_default = family != "sd15" or BaseModel.objects.filter(is_default=True).exclude(name=TINY_NAME).exists()
        try:
            model = base_model_register(name=name, source=str(folder), kind=family, source_type="folder",
                                        upload=True,
                                        description=f"Tiny random {FAMILY_LABELS[family]}-shaped model for tests "
                                                    "and demos.")
        except BaseModelInvalid as exc:
            raise CommandError(str(exc)) from exc
        if not other_default:
            base_model_set_default(model=model)
        role = "the default base model" if model.is_default else "registered (another model is the default)"
        self.stdout.write(self.style.SUCCESS(f"{'Built' if built else 'Kept'} base model '{name}': {role}."))

from django.core.management.base import BaseCommand, CommandError

from training.basemodels import BaseModelInvalid, base_model_register


class Command(BaseCommand):
    help = (
        "Register a base model so that every GPU machine can load it: a diffusers folder or a single "
        ".safetensors/.ckpt checkpoint, either uploaded once to storage with --upload (each worker downloads and "
        "caches it) or lying under MODELS_DIR (recorded relative to it: put the same files there on every GPU "
        "machine); or a hub id. The kind of a diffusers folder is read from its model_index.json; give --kind for "
        "the others. Registering an existing name points it at the new source."
    )

    def add_arguments(self, parser):
        parser.add_argument("name", help="Short name used in commands and the API (letters, digits, - and _).")
        parser.add_argument("path", help="Folder, checkpoint file (here, or relative to MODELS_DIR) or hub id.")
        parser.add_argument("--upload", action="store_true",
                            help="Upload the folder or file to storage once; every worker downloads and caches it.")
        parser.add_argument("--kind", choices=["sd15", "sdxl"], help="Model kind (default: detected, else sd15).")
        parser.add_argument("--source-type", choices=["folder", "single_file", "hub", "stored"],
                            help="Default: detected from the path.")
        parser.add_argument("--default", action="store_true", help="Make it the default base model.")
        parser.add_argument("--description", default="")

    def handle(self, *args, **options):
        kind = options["kind"]
        source_type = options["source_type"]
        if kind is None and str(options["path"]).lower().endswith(".safetensors"):
            kind = self._sniff(options["path"])
        try:
            model = base_model_register(name=options["name"], source=options["path"], kind=kind,
                                        source_type=source_type, upload=options["upload"],
                                        make_default=options["default"],
                                        description=options["description"])
        except BaseModelInvalid as exc:
            raise CommandError(str(exc)) from exc
        default = " (default)" if model.is_default else ""
        self.stdout.write(self.style.SUCCESS(
            f"Registered base model {model.name}{default}: {model.get_kind_display()}, "
            f"{model.get_source_type_display()}: {model.source}"))
        for note in model.registration_notes:
            self.stdout.write(self.style.WARNING(f"Not checked here: {note}"))

    @staticmethod
    def _sniff(path: str) -> str | None:
        from pathlib import Path

        if not Path(path).is_file():
            return None
        from training.ml.pipelines import sniff_single_file_kind  # reads the header only

        try:
            return sniff_single_file_kind(Path(path))
        except Exception:  # not a readable safetensors file: let the registration explain
            return None

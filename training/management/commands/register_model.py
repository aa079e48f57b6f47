from django.core.management.base import BaseCommand, CommandError

from training.runs.services import BaseModelInvalid, base_model_register


class Command(BaseCommand):
    help = (
        "Register a base model: a local diffusers folder, a single .safetensors/.ckpt checkpoint, or a hub id. "
        "The kind of a diffusers folder is read from its model_index.json; give --kind for the others. "
        "Registering an existing name points it at the new source."
    )

    def add_arguments(self, parser):
        parser.add_argument("name", help="Short name used in commands and the API (letters, digits, - and _).")
        parser.add_argument("path", help="Folder, checkpoint file or hub id.")
        parser.add_argument("--kind", choices=["sd15", "sdxl"], help="Model kind (default: detected, else sd15).")
        parser.add_argument("--source-type", choices=["folder", "single_file", "hub"],
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
                                        source_type=source_type, make_default=options["default"],
                                        description=options["description"])
        except BaseModelInvalid as exc:
            raise CommandError(str(exc)) from exc
        default = " (default)" if model.is_default else ""
        self.stdout.write(self.style.SUCCESS(
            f"Registered base model {model.name}{default}: {model.get_kind_display()}, "
            f"{model.get_source_type_display().lower()} {model.source}"))

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

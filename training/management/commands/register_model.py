from django.core.management.base import BaseCommand, CommandError

from training.basemodels import BaseModelInvalid, base_model_register


class Command(BaseCommand):
    help = (
        "Register a base model so that every GPU machine can load it: a diffusers folder or a single "
        ".safetensors checkpoint (as downloaded from Civitai), either uploaded once to storage with --upload (each "
        "worker downloads and caches it) or lying under MODELS_DIR (recorded relative to it: put the same files "
        "there on every GPU machine); or a hub id. The family (SD1.5, SD2.x, SDXL, Flux.1) is detected from the "
        "folder's configs or the file's tensor names and reported; other families (SD3, the SDXL refiner, ...) "
        "are refused with their name. Single files load offline with the configs Imagineer ships for their "
        "family, or with a <checkpoint stem>.config folder beside the file (a diffusers folder without weights). "
        "Registering an existing name points it at the new source."
    )

    def add_arguments(self, parser):
        parser.add_argument("name", help="Short name used in commands and the API (letters, digits, - and _).")
        parser.add_argument("path", help="Folder, checkpoint file (here, or relative to MODELS_DIR) or hub id.")
        parser.add_argument("--upload", action="store_true",
                            help="Upload the folder or file to storage once; every worker downloads and caches it.")
        parser.add_argument("--kind", choices=["sd15", "sd2", "sdxl", "flux"],
                            help="Model family (default: detected from the files; needed for hub ids).")
        parser.add_argument("--source-type", choices=["folder", "single_file", "hub", "stored"],
                            help="Default: detected from the path.")
        parser.add_argument("--default", action="store_true", help="Make it the default base model.")
        parser.add_argument("--description", default="")

    def handle(self, *args, **options):
        kind = options["kind"]
        source_type = options["source_type"]
        try:
            model = base_model_register(name=options["name"], source=options["path"], kind=kind,
                                        source_type=source_type, upload=options["upload"],
                                        make_default=options["default"],
                                        description=options["description"])
        except BaseModelInvalid as exc:
            raise CommandError(str(exc)) from exc
        default = " (default)" if model.is_default else ""
        if model.source_type != "hub":
            self.stdout.write(f"Detected family: {model.get_kind_display()} ({model.kind}).")
        self.stdout.write(self.style.SUCCESS(
            f"Registered base model {model.name}{default}: {model.get_kind_display()}, "
            f"{model.get_source_type_display()}: {model.source}"))
        for note in model.registration_notes:
            self.stdout.write(self.style.WARNING(f"Not checked here: {note}"))

from django.core.management.base import BaseCommand, CommandError

from labeling.backends.fetch import FetchFailed, default_specs, fetch


class Command(BaseCommand):
    help = (
        "Download the offline labelers' models from the Hugging Face hub: the tagger (a WD14-format "
        "model.onnx + selected_tags.csv, IMAGINEER_TAGGER_REPO) into IMAGINEER_TAGGER_DIR and the captioner "
        "(a transformers checkpoint, IMAGINEER_CAPTIONER_REPO) into IMAGINEER_CAPTIONER_DIR. Run it on each "
        "labeling worker. Folders that already hold a model are kept unless --force. Where the hub cannot be "
        "reached, copy the files by hand (README, 'Offline labelers')."
    )

    def add_arguments(self, parser):
        parser.add_argument("--tagger", action="store_true", help="Only the tagger.")
        parser.add_argument("--captioner", action="store_true", help="Only the captioner.")
        parser.add_argument("--tagger-repo", metavar="REPO", help="Hub repository of the tagger instead of the "
                                                                  "setting (e.g. SmilingWolf/wd-vit-tagger-v3).")
        parser.add_argument("--captioner-repo", metavar="REPO", help="Hub repository of the captioner instead "
                                                                     "of the setting.")
        parser.add_argument("--endpoint", metavar="URL", help="Hub address (a mirror); default HF_ENDPOINT or "
                                                             "huggingface.co.")
        parser.add_argument("--force", action="store_true", help="Download again even if the folder has a model.")

    def handle(self, *args, **options):
        from dataclasses import replace

        specs = default_specs()
        if options["tagger_repo"]:
            specs["tagger"] = replace(specs["tagger"], repo=options["tagger_repo"])
        if options["captioner_repo"]:
            specs["captioner"] = replace(specs["captioner"], repo=options["captioner_repo"])
        wanted = [kind for kind in ("tagger", "captioner") if options[kind]] or ["tagger", "captioner"]
        failures = []
        for kind in wanted:
            try:
                self.stdout.write(fetch(specs[kind], endpoint=options["endpoint"], force=options["force"]))
            except FetchFailed as exc:
                failures.append(str(exc))
                self.stderr.write(str(exc))
        if failures:
            raise CommandError(f"{len(failures)} of {len(wanted)} model(s) could not be fetched; see above.")

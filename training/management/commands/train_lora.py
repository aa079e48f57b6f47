import argparse

from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from gallery.models import Album
from imagineer.cli import add_run_mode_arguments, finish, wait_for_job
from imagineer.jobs import QueueUnavailable
from imagineer.models import JobStatus
from imagineer.quotas import QuotaExceeded
from training.models import BaseModel, LoraModel, TrainingRun
from training.runs.params import (
    MODULE_SET_CHOICES,
    OPTIMIZER_CHOICES,
    OPTION_NAMES,
    SCHEDULER_CHOICES,
    RunInputError,
)
from training.runs.services import run_create


class Command(BaseCommand):
    help = (
        "Train a LoRA on one or more albums. Without --wait or --inline the run is only queued (a worker on the "
        "'train' queue runs it). Ends with the LoRA's name and file paths; the exit status is non-zero when the "
        "run failed or was cancelled."
    )

    def add_arguments(self, parser):
        parser.add_argument("--album", metavar="NAME", action="append", required=True,
                            help="Album name; repeat to train on several albums.")
        parser.add_argument("--owner", metavar="USERNAME", help="Whose albums (needed when a name is ambiguous); "
                            "the run belongs to this user, else to the albums' owner.")
        parser.add_argument("--base-model", metavar="NAME", help="Base model name (default: the default model).")
        parser.add_argument("--name", default="", help="Run name (default: the album names and the date).")
        parser.add_argument("--steps", type=int)
        parser.add_argument("--epochs", type=int, help="Instead of --steps: passes over the dataset.")
        parser.add_argument("--batch-size", type=int)
        parser.add_argument("--lr", "--learning-rate", dest="learning_rate", type=float)
        parser.add_argument("--rank", type=int)
        parser.add_argument("--alpha", type=float)
        parser.add_argument("--resolution", type=int)
        parser.add_argument("--seed", type=int)
        parser.add_argument("--mixed-precision", choices=["no", "fp16", "bf16"])
        parser.add_argument("--checkpoint-every", type=int)
        parser.add_argument("--sample-every", type=int, help="Render a sample image every N steps (0: never).")
        parser.add_argument("--sample-prompt", help="Prompt of the samples (default: the first caption).")
        parser.add_argument("--gradient-checkpointing", action=argparse.BooleanOptionalAction, default=None,
                            help="Trade speed for memory (default: on for SDXL and Flux).")
        data = parser.add_argument_group("data")
        data.add_argument("--caption-dropout", type=float, help="Share of captions replaced by empty text (0–1).")
        data.add_argument("--random-flip", action=argparse.BooleanOptionalAction, default=None,
                          help="Mirror images at random.")
        data.add_argument("--center-crop", action=argparse.BooleanOptionalAction, default=None,
                          help="Crop to the centre instead of at random.")
        opts = parser.add_argument_group("trainer options (see the Advanced section of the new-run page)")
        opts.add_argument("--optimizer", choices=[v for v, _ in OPTIMIZER_CHOICES],
                          help="adamw8bit needs a CUDA worker with bitsandbytes; prodigy wants --lr 1.")
        opts.add_argument("--lr-scheduler", choices=[v for v, _ in SCHEDULER_CHOICES])
        opts.add_argument("--warmup-steps", dest="lr_warmup_steps", type=int)
        opts.add_argument("--gradient-accumulation", type=int)
        opts.add_argument("--max-grad-norm", type=float, help="0: no clipping.")
        opts.add_argument("--weight-decay", type=float)
        opts.add_argument("--min-snr-gamma", type=float, help="Min-SNR loss weighting; 0: off, 5 is usual.")
        opts.add_argument("--noise-offset", type=float)
        opts.add_argument("--lora-modules", choices=[v for v, _ in MODULE_SET_CHOICES],
                          help="attention; kohya (attention, feed-forward, proj_in/out); locon (kohya + convs).")
        opts.add_argument("--train-text-encoder", action="store_true", default=None)
        opts.add_argument("--text-encoder-lr", type=float, help="Default: the learning rate.")
        opts.add_argument("--trigger-word", help="Put first in every caption that lacks it.")
        opts.add_argument("--shuffle-tags", action="store_true", default=None)
        opts.add_argument("--keep-tags", type=int, help="Tags at the start of a caption that shuffling keeps.")
        opts.add_argument("--clip-skip", type=int, help="2: the text encoder's second-last layer (SD1.5).")
        opts.add_argument("--no-cache", dest="cache", action="store_false", default=None,
                          help="Run the VAE and text encoder every step instead of caching their outputs.")
        add_run_mode_arguments(parser)

    def handle(self, *args, **options):
        owner = None
        if options["owner"]:
            owner = get_user_model().objects.filter(username=options["owner"]).first()
            if owner is None:
                raise CommandError(f"No user named {options['owner']!r}.")
        albums = [self._album(name, owner) for name in options["album"]]
        owners = {album.owner_id for album in albums}
        if owner is None:
            if len(owners) > 1:
                raise CommandError("The albums belong to several users; add --owner USERNAME.")
            owner = albums[0].owner
        if not options["base_model"] and BaseModel.default() is None:
            call_command("build_tiny_model", if_missing=True, stdout=self.stdout)
        params = {key: options[key] for key in ("steps", "epochs", "batch_size", "learning_rate", "rank", "alpha",
                                                "resolution", "seed", "mixed_precision", "checkpoint_every",
                                                "sample_every", "sample_prompt", "gradient_checkpointing",
                                                "caption_dropout", "random_flip", "center_crop", *OPTION_NAMES)}
        try:
            run = run_create(owner=owner, album_ids=[a.pk for a in albums], params=params, name=options["name"],
                             base_model=options["base_model"], enqueue=not options["inline"])
        except RunInputError as exc:
            raise CommandError(str(exc)) from exc
        except (QuotaExceeded, QueueUnavailable) as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(f"Training run {run.pk} “{run.name}”: {len(run.dataset)} image(s), {run.steps} steps, "
                          f"base model {run.base_model.name}.")
        if options["inline"]:
            from training.runs.jobs import run_training  # the training stack is heavy

            try:
                run_training(run.pk)
            except KeyboardInterrupt:
                TrainingRun.objects.filter(pk=run.pk, status=JobStatus.RUNNING).update(
                    status=JobStatus.CANCELLED, finished_at=timezone.now(), message="Interrupted.")
                raise CommandError(f"Interrupted: run {run.pk} stopped; resume it from its page.") from None
        elif options["wait"]:
            wait_for_job(run, show_progress=not options["no_progress"])
        else:
            self.stdout.write("Queued; a worker on the 'train' queue will run it.")
            return
        finish(self, run)
        lora = LoraModel.objects.filter(training_run=run).first()
        if lora is None:
            raise CommandError(f"Run {run.pk} ended without registering a LoRA.")
        self.stdout.write(f"LoRA: {lora.name}")
        self.stdout.write(f"diffusers file: {lora.diffusers_file}")
        self.stdout.write(f"kohya file: {lora.kohya_file}")

    def _album(self, name: str, owner) -> Album:
        albums = Album.objects.filter(name=name)
        if owner is not None:
            albums = albums.filter(owner=owner)
        found = list(albums[:2])
        if not found:
            raise CommandError(f"No album named {name!r}.")
        if len(found) > 1:
            raise CommandError(f"Several users have an album named {name!r}; add --owner USERNAME.")
        return found[0]

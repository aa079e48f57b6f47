from pathlib import Path

from django.core.files.storage import default_storage
from django.core.management.base import BaseCommand, CommandError

from imagineer.cli import add_run_mode_arguments, finish, resolve_owner, wait_for_job
from imagineer.jobs import QueueUnavailable
from imagineer.models import JobStatus
from imagineer.quotas import QuotaExceeded
from training.generation import selectors
from training.generation.jobs import run_generation_inline
from training.generation.services import GenerationInputError, LoraChoice, generation_create
from training.ml.generate import SCHEDULERS


def _lora_argument(value: str) -> LoraChoice:
    name, sep, weight = value.partition(":")
    if not name.strip():
        raise CommandError(f"--lora {value!r}: give a LoRA name, optionally with :WEIGHT.")
    if not sep:
        return LoraChoice(name.strip(), None)
    try:
        return LoraChoice(name.strip(), float(weight))
    except ValueError:
        raise CommandError(f"--lora {value!r}: the weight {weight!r} is not a number.") from None


class Command(BaseCommand):
    help = (
        "Generate images from a text prompt with a base model and LoRAs (img2img from a gallery image with "
        "--init-image, inpainting with --mask, hires fix with --hires-scale). The images go to the owner's gallery "
        "(private, with A1111 'parameters' metadata). Without --wait or --inline the job is only queued. "
        "Prints the created image ids and file paths; exit status is non-zero when the generation failed."
    )

    def add_arguments(self, parser):
        parser.add_argument("prompt", help="What the image should show.")
        parser.add_argument("--negative", default="", metavar="TEXT", help="Negative prompt.")
        parser.add_argument("--base-model", metavar="NAME", help="Base model name (default: the default model).")
        parser.add_argument("--lora", action="append", default=[], metavar="NAME[:WEIGHT]",
                            help="A LoRA with an optional weight (default: its registered weight). Repeatable.")
        parser.add_argument("--steps", type=int, help="Denoising steps (default 25).")
        parser.add_argument("--seed", type=int, help="Seed (default: random, always recorded).")
        parser.add_argument("--width", type=int, help="Width, a multiple of 8 (default: the model's native size).")
        parser.add_argument("--height", type=int, help="Height, a multiple of 8.")
        parser.add_argument("--count", type=int, default=1, help="How many images (seed, seed+1, ...).")
        parser.add_argument("--scheduler", choices=sorted(SCHEDULERS), metavar="NAME",
                            help=f"Sampler: {', '.join(SCHEDULERS)} (default euler_a).")
        parser.add_argument("--guidance", type=float, metavar="F", help="CFG scale (default 7).")
        parser.add_argument("--owner", metavar="USERNAME",
                            help="Whose gallery receives the images (default: the only user, else the only superuser).")
        modes = parser.add_argument_group("image to image, inpainting and hires fix")
        modes.add_argument("--init-image", type=int, metavar="IMAGE_ID",
                           help="img2img from this gallery image (one the owner can see).")
        modes.add_argument("--mask", metavar="PNG",
                           help="With --init-image: inpaint where this mask PNG is white (the source's size).")
        modes.add_argument("--strength", type=float, metavar="F",
                           help="How far from the source: 0 keeps it, 1 ignores it (default 0.75).")
        modes.add_argument("--hires-scale", type=float, metavar="F",
                           help="Hires fix: upscale by F after the first pass and denoise again (1: off).")
        modes.add_argument("--hires-steps", type=int, metavar="N", help="Steps of the second pass (0: as --steps).")
        modes.add_argument("--hires-strength", type=float, metavar="F", help="Denoising of the second pass.")
        add_run_mode_arguments(parser)

    def _owner(self, username: str | None):
        return resolve_owner(username)

    def handle(self, *args, **options):
        owner = self._owner(options["owner"])
        loras = [_lora_argument(value) for value in options["lora"]]
        mask_png = None
        if options["mask"]:
            if options["init_image"] is None:
                raise CommandError("--mask needs --init-image: the picture to inpaint.")
            try:
                mask_png = Path(options["mask"]).read_bytes()
            except OSError as exc:
                raise CommandError(f"--mask {options['mask']}: {exc.strerror or exc}.") from exc
        mode = "txt2img" if options["init_image"] is None else ("inpaint" if mask_png else "img2img")
        if options["strength"] is not None and mode == "txt2img":
            raise CommandError("--strength needs --init-image.")
        try:
            job = generation_create(
                user=owner, prompt=options["prompt"], negative_prompt=options["negative"],
                base_model=options["base_model"], loras=loras, scheduler=options["scheduler"],
                steps=options["steps"], guidance_scale=options["guidance"], seed=options["seed"],
                width=options["width"], height=options["height"], count=options["count"],
                mode=mode, source_image=options["init_image"], mask_png=mask_png, strength=options["strength"],
                hires_scale=options["hires_scale"], hires_steps=options["hires_steps"],
                hires_strength=options["hires_strength"], enqueue=not options["inline"],
            )
        except (GenerationInputError, QuotaExceeded, QueueUnavailable) as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(f"Generation {job.pk}: {job.count} image(s), {job.width}×{job.height}, "
                          f"{job.steps} steps, seed {job.seed}, model {job.base_model.name}.")
        if options["inline"]:
            run_generation_inline(job.pk)
        elif options["wait"]:
            wait_for_job(job, show_progress=not options["no_progress"])
        else:
            position = selectors.queue_position(job)
            self.stdout.write(f"Queued (position {position}); a worker on the 'generate' queue will run it.")
            return
        job.refresh_from_db()
        if job.status == JobStatus.SUCCEEDED:
            for image in selectors.job_images(job):
                try:
                    where = default_storage.path(image.file.name)
                except NotImplementedError:  # remote storage: the storage name is the address
                    where = image.file.name
                self.stdout.write(f"image {image.pk}: {where}")
        finish(self, job)

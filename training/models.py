"""Base models, LoRA training runs, the LoRA registry and generation jobs."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.urls import reverse
from django.utils import timezone

from imagineer.models import Job, JobStatus


class ModelKind(models.TextChoices):
    """The model families of training/ml/families (a test keeps the two lists the same)."""

    SD15 = "sd15", "Stable Diffusion 1.5"
    SD2 = "sd2", "Stable Diffusion 2.x"
    SDXL = "sdxl", "Stable Diffusion XL"
    FLUX = "flux", "Flux.1"


class SourceType(models.TextChoices):
    STORED = "stored", "Stored once in storage (every worker downloads and caches it)"
    FOLDER = "folder", "Diffusers folder under each machine's MODELS_DIR"
    SINGLE_FILE = "single_file", "Checkpoint file under each machine's MODELS_DIR"
    HUB = "hub", "Hub id (machines that can reach a hub)"


# The size each family was trained at; a model's own config may say otherwise (see native_resolution).
KIND_RESOLUTIONS = {ModelKind.SD15: 512, ModelKind.SD2: 768, ModelKind.SDXL: 1024, ModelKind.FLUX: 1024}


class BaseModel(models.Model):
    name = models.SlugField(max_length=100, unique=True, help_text="Short name used in commands and the API.")
    kind = models.CharField(max_length=8, choices=ModelKind.choices, default=ModelKind.SD15)
    source = models.CharField(
        max_length=1000,
        help_text="Where every GPU machine finds the model, never a path of one machine: the storage prefix of a "
                  "stored model (base-models/<name>/<digest>), a path relative to each machine's MODELS_DIR, or a "
                  "hub id. Register with `manage.py register_model`, which checks it.")
    source_type = models.CharField(max_length=12, choices=SourceType.choices, default=SourceType.STORED)
    digest = models.CharField(max_length=64, blank=True,
                              help_text="sha256 of a stored model's manifest: the key of the workers' local caches.")
    native_resolution = models.PositiveIntegerField(
        null=True, blank=True,
        help_text="The size in pixels the model was trained at, read from a diffusers folder's config when it is "
                  "registered. Empty: the family's usual size (512 for SD1.5, 768 for SD2.x, 1024 for "
                  "SDXL and Flux.1).")
    description = models.TextField(blank=True)
    is_default = models.BooleanField(default=False, help_text="Used when a run or generation names no model.")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name"]
        constraints = [models.UniqueConstraint(fields=["is_default"], condition=Q(is_default=True),
                                               name="training_basemodel_one_default")]

    def __str__(self) -> str:
        return self.name

    @classmethod
    def default(cls) -> BaseModel | None:
        return cls.objects.filter(is_default=True).first() or cls.objects.order_by("created_at").first()

    @property
    def cache_key(self) -> str:
        return f"{self.pk}:{self.source_type}:{self.source}:{self.digest}"

    @property
    def native_size(self) -> int:
        """The size that suits the model: training at another size costs quality (smaller) or time (larger:
        the tiny test model is 64 px, and each step at 512 px works on 64 times the pixels)."""
        return self.native_resolution or KIND_RESOLUTIONS.get(self.kind, 512)


class TrainingStage(models.TextChoices):
    QUEUED = "queued", "Queued"
    PREPARING = "preparing", "Preparing the dataset"
    TRAINING = "training", "Training"
    SAVING = "saving", "Saving"
    DONE = "done", "Done"


class MixedPrecision(models.TextChoices):
    NO = "no", "No (fp32)"
    FP16 = "fp16", "fp16"
    BF16 = "bf16", "bf16"


class TrainingRun(Job):
    queue_name = "train"
    job_function = "training.runs.jobs.run_training"
    resumable = True
    quota_kind = "training"

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="training_runs")
    name = models.CharField(max_length=100)
    albums = models.ManyToManyField("gallery.Album", related_name="training_runs",
                                    help_text="The albums chosen; kept even if they change later.")
    album_names = models.JSONField(default=list, blank=True, help_text="Album names at the time of the run.")
    dataset = models.JSONField(default=list, blank=True,
                               help_text="Frozen snapshot: [{image_id, sha256, caption}] the run trains on.")
    base_model = models.ForeignKey(BaseModel, on_delete=models.PROTECT, related_name="training_runs")
    # Hyperparameters
    steps = models.PositiveIntegerField(default=500)
    batch_size = models.PositiveIntegerField(default=1)
    learning_rate = models.FloatField(default=1e-4)
    rank = models.PositiveIntegerField(default=16)
    alpha = models.FloatField(default=16)
    resolution = models.PositiveIntegerField(default=512)
    seed = models.BigIntegerField(default=0)
    mixed_precision = models.CharField(max_length=4, choices=MixedPrecision.choices, default=MixedPrecision.NO)
    gradient_checkpointing = models.BooleanField(default=False)
    caption_dropout = models.FloatField(default=0.0)
    center_crop = models.BooleanField(default=False)
    random_flip = models.BooleanField(default=True)
    checkpoint_every = models.PositiveIntegerField(default=100)
    sample_every = models.PositiveIntegerField(default=0, help_text="0: no sample images.")
    sample_prompt = models.CharField(max_length=500, blank=True)
    options = models.JSONField(default=dict, blank=True, help_text=(
        "Further trainer options (optimizer, scheduler, LoRA layers, text encoder, captions, loss); "
        "see training/runs/params.py. Missing keys take their defaults."))
    # Progress
    stage = models.CharField(max_length=10, choices=TrainingStage.choices, default=TrainingStage.QUEUED)
    step = models.PositiveIntegerField(default=0)
    total_steps = models.PositiveIntegerField(default=0)
    loss_history = models.JSONField(default=list, blank=True, help_text="[[step, loss], ...]")
    samples = models.JSONField(default=list, blank=True, help_text="[{step, files: [...]}]")
    steps_per_second = models.FloatField(null=True, blank=True)
    resumed_from = models.PositiveIntegerField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.name

    def get_absolute_url(self) -> str:
        return reverse("training:run_detail", args=[self.pk])

    def can_resume(self) -> bool:
        return not self.cancel_requested

    @property
    def run_dir(self) -> Path:
        """The worker's local scratch folder for this run; everything others read is uploaded from it."""
        return Path(settings.WORK_DIR) / "runs" / str(self.pk)

    @property
    def artifact_prefix(self) -> str:
        """Where the run's log, samples, checkpoints and LoRA files live in the artifacts storage."""
        return f"runs/{self.pk}"

    @property
    def eta(self) -> timedelta | None:
        if self.status != JobStatus.RUNNING or not self.steps_per_second or not self.total_steps:
            return None
        return timedelta(seconds=max(0, self.total_steps - self.step) / self.steps_per_second)

    @property
    def last_loss(self) -> float | None:
        return self.loss_history[-1][1] if self.loss_history else None


class LoraModel(models.Model):
    name = models.SlugField(max_length=100, unique=True, help_text="Used in prompts, commands and the API.")
    friendly_name = models.CharField(max_length=200)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="loras")
    base_model = models.ForeignKey(BaseModel, on_delete=models.PROTECT, related_name="loras")
    training_run = models.OneToOneField(TrainingRun, null=True, blank=True, on_delete=models.SET_NULL,
                                        related_name="lora")
    diffusers_file = models.CharField(
        max_length=500, help_text="Key of the diffusers-format .safetensors in the artifacts storage (written by "
                                  "the training run; not editable).")
    diffusers_sha256 = models.CharField(max_length=64, blank=True)
    kohya_file = models.CharField(
        max_length=500, blank=True, help_text="Key of the kohya-format .safetensors (A1111, ComfyUI) in the "
                                              "artifacts storage.")
    kohya_sha256 = models.CharField(max_length=64, blank=True)
    checkpoint_of = models.ForeignKey(TrainingRun, null=True, blank=True, on_delete=models.SET_NULL,
                                      related_name="checkpoint_loras",
                                      help_text="The run whose kept checkpoint this LoRA was registered from.")
    checkpoint_step = models.PositiveIntegerField(null=True, blank=True, help_text="That checkpoint's step.")
    default_weight = models.FloatField(default=0.6)
    trigger_words = models.CharField(max_length=300, blank=True)
    is_public = models.BooleanField(default=False, help_text="Everyone may generate with a public LoRA.")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.friendly_name or self.name

    def get_absolute_url(self) -> str:
        return reverse("training:lora_detail", args=[self.pk])

    def is_usable_by(self, user) -> bool:
        return self.is_public or (user is not None and user.is_authenticated
                                  and (user.is_staff or user.pk == self.owner_id))


class GenerationJob(Job):
    queue_name = "generate"
    job_function = "training.generation.jobs.run_generation"
    quota_kind = "generation"

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="generation_jobs")
    prompt = models.TextField()
    negative_prompt = models.TextField(blank=True)
    base_model = models.ForeignKey(BaseModel, on_delete=models.PROTECT, related_name="generation_jobs")
    loras = models.ManyToManyField(LoraModel, through="GenerationLora", related_name="generation_jobs")
    scheduler = models.CharField(max_length=30, default="euler_a")
    steps = models.PositiveIntegerField(default=25)
    guidance_scale = models.FloatField(default=7.0)
    seed = models.BigIntegerField(help_text="Always recorded; random when the user left it empty.")
    width = models.PositiveIntegerField(default=512)
    height = models.PositiveIntegerField(default=512)
    count = models.PositiveIntegerField(default=1)
    step = models.PositiveIntegerField(default=0)
    total_steps = models.PositiveIntegerField(default=0)
    timings = models.JSONField(default=dict, blank=True, help_text="Seconds: queue_wait, load, denoise, save.")
    images = models.ManyToManyField("gallery.Image", through="GenerationOutput", related_name="generation_jobs")
    # Modes beyond text to image (training.ml.modes): the source and mask are the job's inputs, kept as lineage.
    mode = models.CharField(max_length=10, default="txt2img",
                            choices=[("txt2img", "Text to image"), ("img2img", "Image to image"),
                                     ("inpaint", "Inpaint")])
    source_image = models.ForeignKey("gallery.Image", null=True, blank=True, on_delete=models.SET_NULL,
                                     related_name="+", help_text="The image img2img or inpainting started from.")
    mask_png = models.BinaryField(blank=True, default=b"", help_text="Inpainting mask (PNG, white = repaint).")
    strength = models.FloatField(null=True, blank=True, help_text="Denoising strength of img2img / inpainting.")
    hires_scale = models.FloatField(default=1.0, help_text="Hires fix upscale factor; 1 = off.")
    hires_steps = models.PositiveIntegerField(default=0, help_text="Hires fix steps; 0 = the same as steps.")
    hires_strength = models.FloatField(default=0.5, help_text="Hires fix denoising strength.")
    preview_png = models.BinaryField(blank=True, default=b"", help_text="Live preview while denoising (cheap).")
    preview_step = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"“{self.prompt[:60]}”"

    def get_absolute_url(self) -> str:
        return reverse("training:generation_detail", args=[self.pk])


class GenerationLora(models.Model):
    job = models.ForeignKey(GenerationJob, on_delete=models.CASCADE, related_name="lora_entries")
    lora = models.ForeignKey(LoraModel, on_delete=models.PROTECT, related_name="+")
    weight = models.FloatField()
    position = models.PositiveSmallIntegerField(default=0)

    class Meta:
        ordering = ["position"]
        constraints = [models.UniqueConstraint(fields=["job", "lora"], name="training_generationlora_unique")]

    def __str__(self) -> str:
        return f"{self.lora.name}:{self.weight}"


class GenerationOutput(models.Model):
    job = models.ForeignKey(GenerationJob, on_delete=models.CASCADE, related_name="outputs")
    image = models.OneToOneField("gallery.Image", on_delete=models.CASCADE, related_name="generation_output")
    index = models.PositiveSmallIntegerField(default=0)
    seed = models.BigIntegerField()

    class Meta:
        ordering = ["index"]

    def __str__(self) -> str:
        return f"{self.job_id}#{self.index}"


class EvaluationGrid(Job):
    """Images of several LoRAs (a run's checkpoints, or any LoRAs to compare) on the same prompts and seeds.

    Column j is one LoRA file at one weight; row i is prompt i with seed `seed + i` in every column, so the
    columns differ only by the LoRA. Made on the `generate` queue (training.runs.evaluation).
    """

    queue_name = "generate"
    job_function = "training.runs.jobs.run_evaluation"

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="evaluation_grids")
    run = models.ForeignKey(TrainingRun, null=True, blank=True, on_delete=models.CASCADE, related_name="grids",
                            help_text="The run whose checkpoints are compared; empty when comparing LoRAs.")
    base_model = models.ForeignKey(BaseModel, on_delete=models.PROTECT, related_name="evaluation_grids")
    title = models.CharField(max_length=200)
    columns = models.JSONField(default=list, help_text="[{label, file (storage key), weight, lora_id}]")
    prompts = models.JSONField(default=list)
    negative_prompt = models.CharField(max_length=500, blank=True)
    seed = models.BigIntegerField(default=0)
    steps = models.PositiveIntegerField(default=20)
    guidance_scale = models.FloatField(default=7.0)
    scheduler = models.CharField(max_length=30, default="euler")
    width = models.PositiveIntegerField(default=512)
    height = models.PositiveIntegerField(default=512)
    cells = models.JSONField(default=list, blank=True, help_text="[{row, col, seed, file}] as they are made.")
    grid_file = models.CharField(max_length=500, blank=True, help_text="Storage key of the whole grid as one PNG.")

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.title

    def get_absolute_url(self) -> str:
        return reverse("training:grid_detail", args=[self.pk])

    @property
    def artifact_prefix(self) -> str:
        return f"grids/{self.pk}"

    def cell_file(self, row: int, col: int) -> str | None:
        """Storage key of one made image of the grid; None while it is not made."""
        return next((c["file"] for c in self.cells if c["row"] == row and c["col"] == col), None)

"""Labels (captions, tags, categories, NSFW verdicts) and the jobs that make them."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.urls import reverse
from django.utils import timezone

from imagineer.models import Job


class LabelKind(models.TextChoices):
    CAPTION = "caption", "Caption"
    TAG = "tag", "Tag"
    CATEGORY = "category", "Category"
    NSFW = "nsfw", "NSFW"


class LabelSource(models.TextChoices):
    CLAUDE = "claude", "Claude"
    LOCAL = "local", "Local labeler"
    TAGGER = "tagger", "ONNX tagger"
    CAPTIONER = "captioner", "Captioner"
    MANUAL = "manual", "Manual"
    SCRAPER = "scraper", "Scraper"


MACHINE_SOURCES = (LabelSource.CLAUDE, LabelSource.LOCAL, LabelSource.TAGGER, LabelSource.CAPTIONER,
                   LabelSource.SCRAPER)


class ReviewState(models.TextChoices):
    PENDING = "pending", "Pending review"
    APPROVED = "approved", "Approved"
    REJECTED = "rejected", "Rejected"


class LabelQuerySet(models.QuerySet):
    def usable(self):
        """Labels that count: everything but rejected machine labels."""
        return self.exclude(review_state=ReviewState.REJECTED)

    def pending(self):
        return self.filter(review_state=ReviewState.PENDING)

    def for_user_images(self, user):
        qs = self.filter(image__trashed_at__isnull=True)
        return qs if user.is_staff else qs.filter(image__owner=user)


class Label(models.Model):
    image = models.ForeignKey("gallery.Image", on_delete=models.CASCADE, related_name="labels")
    kind = models.CharField(max_length=10, choices=LabelKind.choices, db_index=True)
    value = models.TextField(help_text="Caption text, tag, category, or 'nsfw'/'safe' for an NSFW verdict.")
    source = models.CharField(max_length=10, choices=LabelSource.choices, db_index=True)
    confidence = models.FloatField(null=True, blank=True, help_text="0..1 where the source gave one.")
    model = models.CharField(max_length=100, blank=True, help_text="Model that made it (machine labels).")
    model_version = models.CharField(max_length=100, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+", help_text="The person who added it, or who started the job.")
    job = models.ForeignKey("LabelingJob", null=True, blank=True, on_delete=models.SET_NULL, related_name="labels")
    created_at = models.DateTimeField(default=timezone.now)
    review_state = models.CharField(max_length=10, choices=ReviewState.choices, default=ReviewState.PENDING,
                                    db_index=True,
                                    help_text="Machine labels wait for review; manual ones are approved.")
    reviewed_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                    related_name="+")
    reviewed_at = models.DateTimeField(null=True, blank=True)

    objects = LabelQuerySet.as_manager()

    class Meta:
        ordering = ["kind", "value"]
        indexes = [
            models.Index(fields=["image", "kind"], name="labeling_label_image_kind"),
            models.Index(fields=["kind", "value"], name="labeling_label_kind_value"),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()}: {self.value[:60]} ({self.source})"

    @property
    def is_machine(self) -> bool:
        return self.source in MACHINE_SOURCES


class LabelingJob(Job):
    queue_name = "label"
    job_function = "labeling.jobs.run_labeling_job"
    quota_kind = "labeling"

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="labeling_jobs")
    backend = models.CharField(max_length=20, help_text="local, tagger, captioner, claude-docker or anthropic.")
    album = models.ForeignKey("gallery.Album", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    image_ids = models.JSONField(default=list, blank=True, help_text="The selection, when not a whole album.")
    force = models.BooleanField(default=False, help_text="Label again images this backend already labelled.")
    image_errors = models.JSONField(default=list, blank=True, help_text="Per-image failures: id and reason.")

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        target = f"album {self.album}" if self.album_id else f"{len(self.image_ids)} image(s)"
        return f"Labeling {target} with {self.backend}"

    def get_absolute_url(self) -> str:
        return reverse("labeling:job_detail", args=[self.pk])


class CaptionRevision(models.Model):
    """One change to a caption label's text: what it was, what it became, by whom and with which tool.

    Together with the training runs' frozen snapshots this is an image's caption history.
    """

    image = models.ForeignKey("gallery.Image", on_delete=models.CASCADE, related_name="caption_revisions")
    label = models.ForeignKey(Label, null=True, blank=True, on_delete=models.SET_NULL, related_name="revisions")
    old_text = models.TextField(blank=True)
    new_text = models.TextField(blank=True)
    tool = models.CharField(max_length=40, help_text="What changed it: edit, replace, template, ...")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                             related_name="+")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at", "-pk"]

    def __str__(self) -> str:
        return f"{self.image_id}: {self.old_text[:30]!r} -> {self.new_text[:30]!r} ({self.tool})"


class CaptionTemplate(models.Model):
    """How an album's training captions are put together from each image's tags and caption."""

    album = models.OneToOneField("gallery.Album", on_delete=models.CASCADE, related_name="caption_template")
    template = models.CharField(max_length=300, help_text="Placeholders: {trigger}, {tags}, {caption}.")
    updated_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return self.template


class LabelerSettings(models.Model):
    """The offline labelers' model folders and options, set in the admin; empty fields use the settings.

    One row (pk 1). Paths are folders on the labeling workers (relative ones are under MODELS_DIR).
    """

    tagger_dir = models.CharField(max_length=500, blank=True,
                                  help_text="Folder with model.onnx and selected_tags.csv. Empty: "
                                            "LABEL_TAGGER_DIR (IMAGINEER_TAGGER_DIR).")
    general_threshold = models.FloatField(null=True, blank=True,
                                          help_text="Keep general tags scoring at least this (0..1). Empty: 0.35 "
                                                    "or IMAGINEER_TAGGER_GENERAL_THRESHOLD.")
    character_threshold = models.FloatField(null=True, blank=True,
                                            help_text="Keep character tags scoring at least this (0..1). Empty: "
                                                      "0.85 or IMAGINEER_TAGGER_CHARACTER_THRESHOLD.")
    blacklist = models.TextField(blank=True, help_text="Comma-separated tags the tagger never keeps "
                                                       "(added to IMAGINEER_TAGGER_BLACKLIST).")
    captioner_dir = models.CharField(max_length=500, blank=True,
                                     help_text="Folder with a transformers captioner checkpoint. Empty: "
                                               "LABEL_CAPTIONER_DIR (IMAGINEER_CAPTIONER_DIR).")
    captioner_prompt = models.CharField(max_length=200, blank=True,
                                        help_text="Task prompt, e.g. <MORE_DETAILED_CAPTION> for Florence-2. "
                                                  "Empty: IMAGINEER_CAPTIONER_PROMPT.")

    class Meta:
        verbose_name = verbose_name_plural = "Labeler settings"

    def __str__(self) -> str:
        return "Labeler settings"

    @classmethod
    def current(cls) -> LabelerSettings:
        return cls.objects.filter(pk=1).first() or cls(pk=1)

    def backend_options(self, backend: str) -> dict:
        """Constructor options for `get_backend(backend, ...)`: only what the admin set."""
        from pathlib import Path

        def folder(value: str):
            path = Path(value)
            return path if path.is_absolute() else Path(settings.MODELS_DIR) / path

        options: dict = {}
        if backend == "tagger":
            if self.tagger_dir:
                options["model_dir"] = folder(self.tagger_dir)
            if self.general_threshold is not None:
                options["general_threshold"] = self.general_threshold
            if self.character_threshold is not None:
                options["character_threshold"] = self.character_threshold
            if self.blacklist.strip():
                options["blacklist"] = ",".join([settings.LABEL_TAGGER_BLACKLIST, self.blacklist])
        elif backend == "captioner":
            if self.captioner_dir:
                options["model_dir"] = folder(self.captioner_dir)
            if self.captioner_prompt:
                options["prompt"] = self.captioner_prompt
        return options

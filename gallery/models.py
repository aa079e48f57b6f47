"""Images and albums. Every image, whatever brought it in, is one `Image` row."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Exists, F, OuterRef, Q, Subquery
from django.db.models.functions import Coalesce
from django.urls import reverse
from django.utils import timezone

from . import hooks


class ImageSource(models.TextChoices):
    UPLOAD = "upload", "Upload"
    INDEX = "index", "Indexed from disk"
    SCRAPE = "scrape", "Scraped"
    GENERATED = "generated", "Generated"


class DerivativeStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    READY = "ready", "Ready"
    FAILED = "failed", "Failed"


class NsfwMode(models.TextChoices):
    SHOW = "show", "Show"
    BLUR = "blur", "Blur"
    HIDE = "hide", "Hide"


def image_visibility_q(user, prefix: str = "") -> Q:
    """The images `user` may see, as a condition: their own live ones and live public ones; staff see every
    live image; nobody anonymous sees NSFW. `prefix` reaches the image from another model ("entries__image__").

    The one statement of the rule for queries: Image.objects.visible_to, an album's contents
    (Album.images_visible_to), album counts and covers all build on it. Image.is_visible_to is its
    single-row twin.
    """

    def q(**lookups) -> Q:
        return Q(**{prefix + key: value for key, value in lookups.items()})

    alive = q(trashed_at__isnull=True)
    if user is None or not user.is_authenticated:
        return alive & q(is_public=True, is_nsfw=False)
    if user.is_staff:
        return alive
    return alive & (q(owner=user) | q(is_public=True))


def shared_image_q(user, *, editor: bool = False) -> Q:
    """The live images `user` sees as a member of an album holding them (gallery/sharing.py): put there by
    the album's owner or one of its contributing members. `editor`: only through albums where `user` is an
    editor (whose captions they may edit). An album's owner counts as its editor: what a contributor adds to
    her album is hers to see and caption. Nothing for anonymous users; staff are not members.

    The one statement of the membership rule: sharing.image_shared_with and sharing.can_edit_captions ask
    it of one image, ImageQuerySet.accessible_to and caption_editable_by of many.
    """
    if user is None or not user.is_authenticated:
        return Q(pk__in=[])
    member = {"album__members__user": user}
    if editor:
        member["album__members__role"] = AlbumRole.EDITOR
    contributing = AlbumMember.objects.filter(album=OuterRef("album_id"), user=OuterRef("image__owner_id"),
                                              role__in=AlbumRole.ADDING)
    entries = (AlbumImage.objects.filter(Q(**member) | Q(album__owner=user))
               .filter(Q(image__owner_id=F("album__owner_id")) | Exists(contributing)))
    return Q(trashed_at__isnull=True, pk__in=entries.values("image_id"))


class ImageQuerySet(models.QuerySet):
    def alive(self):
        return self.filter(trashed_at__isnull=True)

    def trashed(self):
        return self.filter(trashed_at__isnull=False)

    def visible_to(self, user):
        """Images `user` may see: their own and public ones; staff see all; nobody anonymous sees NSFW."""
        return self.filter(image_visibility_q(user))

    def accessible_to(self, user):
        """Images `user` may open by id (their pages, files and API): visible_to plus what they see as a member
        of a shared album. Not a gallery listing: a member's grid never gains the owner's private images."""
        return self.filter(image_visibility_q(user) | shared_image_q(user))

    def caption_editable_by(self, user):
        """Images whose labels `user` may change: their own, as an editor of a shared album holding them, or
        any as staff (Image.can_edit_captions for many rows)."""
        if user is None or not user.is_authenticated:
            return self.none()
        if user.is_staff:
            return self
        return self.filter(Q(owner=user) | shared_image_q(user, editor=True))

    def in_album(self, album):
        """Membership only, no access rule: to read an album's images use Album.images_visible_to."""
        return self.filter(album_entries__album=album)

    def owned_by(self, user):
        return self.filter(owner=user)

    def search(self, text: str):
        """Title, description, and whatever other apps plug in (labels) through gallery.hooks."""
        text = (text or "").strip()
        if not text:
            return self
        condition = Q()
        for term in text.split()[:8]:
            term_q = Q(title__icontains=term) | Q(description__icontains=term) | Q(original_filename__icontains=term)
            for hook in hooks.search_hooks:
                term_q |= hook(term)
            condition &= term_q
        # Label hooks join other tables, so one image may match more than once.
        return self.filter(pk__in=self.model.objects.filter(condition).values("pk"))

    def with_tag(self, tag: str):
        tag = (tag or "").strip()
        if not tag:
            return self
        if hooks.tag_filter is None:
            return self.none()
        return self.filter(pk__in=hooks.tag_filter(tag))


class Image(models.Model):
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="images")
    file = models.FileField(max_length=255, help_text="The original bytes, stored under a content-addressed name.")
    sha256 = models.CharField(max_length=64, db_index=True)
    phash = models.BigIntegerField(help_text="64-bit perceptual hash (signed) for near-duplicate search.")
    # The hash's four 16-bit bands, indexed, so near duplicates come from index lookups (gallery/neardup.py).
    phash_b0 = models.PositiveIntegerField(default=0, editable=False)
    phash_b1 = models.PositiveIntegerField(default=0, editable=False)
    phash_b2 = models.PositiveIntegerField(default=0, editable=False)
    phash_b3 = models.PositiveIntegerField(default=0, editable=False)
    width = models.PositiveIntegerField()
    height = models.PositiveIntegerField()
    format = models.CharField(max_length=10, help_text="JPEG, PNG, WEBP, GIF, BMP or TIFF.")
    mime = models.CharField(max_length=40)
    bytes = models.PositiveBigIntegerField()
    original_filename = models.CharField(max_length=255, blank=True)
    title = models.CharField(max_length=300, blank=True)
    description = models.TextField(blank=True)
    source = models.CharField(max_length=16, choices=ImageSource.choices, db_index=True)
    source_url = models.URLField(max_length=2000, blank=True, help_text="Where the file came from (scrapes).")
    source_page_url = models.URLField(max_length=2000, blank=True, help_text="The page it was found on (scrapes).")
    source_detail = models.JSONField(default=dict, blank=True, help_text="More lineage: indexed path, job ids.")
    is_public = models.BooleanField(default=False, db_index=True)
    is_nsfw = models.BooleanField(default=False, db_index=True)
    thumbnail = models.FileField(max_length=255, blank=True)
    preview = models.FileField(max_length=255, blank=True)
    derivatives = models.CharField(max_length=10, choices=DerivativeStatus.choices, default=DerivativeStatus.PENDING)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)
    trashed_at = models.DateTimeField(null=True, blank=True, db_index=True)
    taken_at = models.DateTimeField(null=True, blank=True, help_text="When the picture was taken (EXIF), if known.")
    stack_top = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="stacked",
        help_text="Stacked under this image (a near duplicate): the grid shows one tile per stack.",
    )
    # The grid's date: taken_at, else created_at (kept by save(); the grid orders and groups by it).
    shown_at = models.DateTimeField(default=timezone.now, editable=False)

    objects = ImageQuerySet.as_manager()

    class Meta:
        ordering = ["-id"]
        constraints = [models.UniqueConstraint(fields=["owner", "sha256"], name="gallery_image_owner_sha256")]
        indexes = [
            models.Index(fields=["owner", "-id"], name="gallery_img_owner_id"),
            models.Index(fields=["is_public", "is_nsfw", "-id"], name="gallery_img_public_id"),
            models.Index(fields=["owner", "phash_b0"], name="gallery_img_phash_b0"),
            models.Index(fields=["owner", "phash_b1"], name="gallery_img_phash_b1"),
            models.Index(fields=["owner", "phash_b2"], name="gallery_img_phash_b2"),
            models.Index(fields=["owner", "phash_b3"], name="gallery_img_phash_b3"),
            models.Index(fields=["owner", "-shown_at", "-id"], name="gallery_img_owner_shown"),
            models.Index(fields=["is_public", "is_nsfw", "-shown_at", "-id"], name="gallery_img_public_shown"),
        ]

    def __str__(self) -> str:
        return self.title or self.original_filename or f"Image {self.pk}"

    def save(self, *args, **kwargs):
        from .neardup import phash_bands

        self.phash_b0, self.phash_b1, self.phash_b2, self.phash_b3 = phash_bands(self.phash)
        self.shown_at = self.taken_at or self.created_at
        super().save(*args, **kwargs)

    @property
    def display_name(self) -> str:
        return str(self)

    @property
    def is_trashed(self) -> bool:
        return self.trashed_at is not None

    @property
    def megapixels(self) -> float:
        return round(self.width * self.height / 1_000_000, 2)

    def get_absolute_url(self) -> str:
        return reverse("gallery:image_detail", args=[self.pk])

    def thumbnail_url(self) -> str:
        return reverse("gallery:image_thumbnail", args=[self.pk])

    def preview_url(self) -> str:
        return reverse("gallery:image_preview", args=[self.pk])

    def download_url(self) -> str:
        return reverse("gallery:image_original", args=[self.pk])

    def is_visible_to(self, user) -> bool:
        if user is not None and user.is_authenticated and (user.is_staff or user.pk == self.owner_id):
            return True
        if self.is_trashed or not self.is_public:
            return False
        return not self.is_nsfw or (user is not None and user.is_authenticated)

    def can_edit(self, user) -> bool:
        return user is not None and user.is_authenticated and (user.is_staff or user.pk == self.owner_id)

    def is_accessible_to(self, user) -> bool:
        """Whether `user` may open this image by id: ImageQuerySet.accessible_to for one row."""
        from .sharing import image_shared_with

        return self.is_visible_to(user) or image_shared_with(user, self)

    def can_edit_captions(self, user) -> bool:
        """The owner, staff, and editors of a shared album holding it (gallery/sharing.py)."""
        from .sharing import can_edit_captions

        return can_edit_captions(user, self)


class AlbumQuerySet(models.QuerySet):
    def visible_to(self, user):
        if user is None or not user.is_authenticated:
            return self.filter(is_public=True)
        if user.is_staff:
            return self
        member_of = AlbumMember.objects.filter(user=user).values("album_id")
        return self.filter(Q(owner=user) | Q(is_public=True) | Q(pk__in=member_of))

    def addable_by(self, user):
        """Albums `user` may add images to: their own and those they contribute to or edit."""
        if user is None or not user.is_authenticated:
            return self.none()
        adding = AlbumMember.objects.filter(user=user, role__in=AlbumRole.ADDING).values("album_id")
        return self.filter(Q(owner=user) | Q(pk__in=adding))

    def with_counts(self, user):
        """`image_count`: how many of the album's images `user` may see."""
        return self.annotate(
            image_count=models.Count("entries", filter=image_visibility_q(user, "entries__image__"), distinct=True)
        )

    def with_cover_ids(self, user):
        """`visible_cover_id`: the chosen cover when `user` may see it, else the first image of the album they
        may see, else None. A cover the viewer may not see is never shown, not even its title."""
        visible = Image.objects.visible_to(user).filter(album_entries__album=OuterRef("pk"))
        chosen = visible.filter(pk=OuterRef("cover_id")).values("pk")[:1]
        first = visible.order_by("album_entries__position", "pk").values("pk")[:1]
        return self.annotate(visible_cover_id=Coalesce(Subquery(chosen), Subquery(first)))


class Album(models.Model):
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="albums")
    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=220)
    description = models.TextField(blank=True)
    cover = models.ForeignKey(
        Image, null=True, blank=True, on_delete=models.SET_NULL, related_name="+",
        help_text="Shown on the album list; the first image when empty.",
    )
    is_public = models.BooleanField(default=False)
    is_training_source = models.BooleanField(
        default=False, help_text="Offer this album as a dataset when starting a training run."
    )
    trigger_word = models.CharField(
        max_length=100, blank=True,
        help_text="Put first in every caption this album trains and exports with (the LoRA's activation word).",
    )
    images = models.ManyToManyField(Image, through="AlbumImage", related_name="albums")
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    objects = AlbumQuerySet.as_manager()

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(fields=["owner", "slug"], name="gallery_album_owner_slug"),
            models.UniqueConstraint(fields=["owner", "name"], name="gallery_album_owner_name"),
        ]

    def __str__(self) -> str:
        return self.name

    def get_absolute_url(self) -> str:
        return reverse("gallery:album_detail", args=[self.pk])

    def images_visible_to(self, user) -> ImageQuerySet:
        """The album's images that `user` may see, in album order.

        Every reader of an album's contents goes through this (pages, API, labeling jobs, dataset export,
        training snapshots): an album may hold other people's public images, and when one of them turns
        private or is trashed it drops out of everyone's view of the album but its owner's.
        """
        condition = image_visibility_q(user)
        owner = user is not None and user.is_authenticated and user.pk == self.owner_id
        if owner or self.is_shared_with(user):
            # The owner and the members see what the owner and the contributing members put in, even private.
            condition |= Q(trashed_at__isnull=True, owner_id__in=self.contributor_ids())
        return Image.objects.filter(condition).in_album(self).order_by("album_entries__position", "pk")

    def images_for_link(self) -> ImageQuerySet:
        """What a share link shows: the owner's and contributing members' live images, never NSFW."""
        condition = image_visibility_q(None) | Q(trashed_at__isnull=True, is_nsfw=False,
                                                 owner_id__in=self.contributor_ids())
        return Image.objects.filter(condition).in_album(self).order_by("album_entries__position", "pk")

    def contributor_ids(self) -> list[int]:
        """The owner and the members who may add images: whose images the album's members all see."""
        ids = list(self.members.filter(role__in=AlbumRole.ADDING).values_list("user_id", flat=True))
        return [self.owner_id, *ids]

    def role_of(self, user) -> str | None:
        """'owner', a member's AlbumRole, or None. Staff count as owners."""
        if user is None or not user.is_authenticated:
            return None
        if user.is_staff or user.pk == self.owner_id:
            return "owner"
        return self.members.filter(user=user).values_list("role", flat=True).first()

    def is_shared_with(self, user) -> bool:
        return (user is not None and user.is_authenticated and user.pk != self.owner_id
                and self.members.filter(user=user).exists())

    def can_add_images(self, user) -> bool:
        return self.role_of(user) in ("owner", *AlbumRole.ADDING)

    def can_remove_images(self, user) -> bool:
        """Removing from the album and editing captions of its images."""
        return self.role_of(user) in ("owner", AlbumRole.EDITOR)

    def can_edit_captions(self, user) -> bool:
        """The album's caption tools (trigger word, template, find & replace, bulk tags) and its review task:
        the owner, staff and editors. What they change: Album.caption_editable_images."""
        return self.can_remove_images(user)

    def caption_editable_images(self, user) -> ImageQuerySet:
        """The album's images whose captions `user` may change, in album order: of those they see in it, the
        ones they may edit captions of through this album (their own; as an editor, the owner's and the
        contributing members'; staff: all). Never an image outside the album."""
        images = self.images_visible_to(user)
        if user is None or not user.is_authenticated:
            return images.none()
        if user.is_staff:
            return images
        if self.role_of(user) == AlbumRole.EDITOR:
            return images.filter(Q(owner=user) | Q(owner_id__in=self.contributor_ids()))
        return images.filter(owner=user)

    def ordered_images(self):
        """The album as its owner sees it."""
        return self.images_visible_to(self.owner)

    def cover_image(self, user) -> Image | None:
        """The cover `user` sees: see AlbumQuerySet.with_cover_ids."""
        cover_id = (type(self).objects.filter(pk=self.pk).with_cover_ids(user)
                    .values_list("visible_cover_id", flat=True).first())
        return Image.objects.filter(pk=cover_id).first() if cover_id else None

    def is_visible_to(self, user) -> bool:
        if self.is_public:
            return True
        return self.role_of(user) is not None

    def can_edit(self, user) -> bool:
        """The album itself: name, order, cover, members, links, deletion. Only the owner (and staff)."""
        return user is not None and user.is_authenticated and (user.is_staff or user.pk == self.owner_id)


class AlbumRole(models.TextChoices):
    VIEWER = "viewer", "Viewer (sees the album)"
    CONTRIBUTOR = "contributor", "Contributor (also adds images)"
    EDITOR = "editor", "Editor (also removes images and edits captions)"


AlbumRole.ADDING = (AlbumRole.CONTRIBUTOR, AlbumRole.EDITOR)


class AlbumMember(models.Model):
    """Someone the owner shares an album with, and what they may do in it (gallery/sharing.py)."""

    album = models.ForeignKey("Album", on_delete=models.CASCADE, related_name="members")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="album_memberships")
    role = models.CharField(max_length=12, choices=AlbumRole.choices, default=AlbumRole.VIEWER)
    added_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["album", "user"], name="gallery_albummember_unique")]

    def __str__(self) -> str:
        return f"{self.user_id} {self.role} of {self.album_id}"


class AlbumShareLink(models.Model):
    """A read-only link to an album for people without an account; it expires and can be revoked."""

    album = models.ForeignKey("Album", on_delete=models.CASCADE, related_name="share_links")
    token = models.CharField(max_length=64, unique=True, editable=False)
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField(help_text="The link stops working at this time.")
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"link to album {self.album_id}"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None and self.expires_at > timezone.now()

    def get_absolute_url(self) -> str:
        return reverse("gallery:shared_album", args=[self.token])


class AlbumImage(models.Model):
    album = models.ForeignKey(Album, on_delete=models.CASCADE, related_name="entries")
    image = models.ForeignKey(Image, on_delete=models.CASCADE, related_name="album_entries")
    position = models.PositiveIntegerField(default=0)
    added_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["position", "pk"]
        constraints = [models.UniqueConstraint(fields=["album", "image"], name="gallery_albumimage_unique")]

    def __str__(self) -> str:
        return f"{self.album_id}:{self.image_id}@{self.position}"


class GalleryPreference(models.Model):
    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="gallery_preference")
    nsfw_mode = models.CharField(max_length=8, choices=NsfwMode.choices, default=NsfwMode.BLUR)

    def __str__(self) -> str:
        return f"{self.user_id}: {self.nsfw_mode}"

    @classmethod
    def nsfw_mode_for(cls, user) -> str:
        if user is None or not user.is_authenticated:
            return NsfwMode.HIDE
        pref = cls.objects.filter(user=user).values_list("nsfw_mode", flat=True).first()
        return pref or NsfwMode.BLUR


class OptOutStatus(models.TextChoices):
    NOT_CHECKED = "not_checked", "Not checked (not fetched from the web)"
    NONE = "none", "No opt-out found at fetch time"
    OPTED_OUT = "opted_out", "Opted out at fetch time"


class ImageProvenance(models.Model):
    """Where an image came from and on what terms, as known when it arrived (one row per image)."""

    image = models.OneToOneField(Image, on_delete=models.CASCADE, primary_key=True, related_name="provenance")
    fetched_at = models.DateTimeField(null=True, blank=True, help_text="When a scrape downloaded it.")
    optout_status = models.CharField(max_length=12, choices=OptOutStatus.choices, default=OptOutStatus.NOT_CHECKED)
    optout_signals = models.JSONField(default=list, blank=True,
                                      help_text="AI opt-out signals at fetch time: [{signal, value, where, url}].")
    licence = models.CharField(max_length=300, blank=True,
                               help_text="The licence the hints point to (e.g. CC BY-SA 4.0 or a URL); blank: unknown.")
    licence_url = models.URLField(max_length=2000, blank=True)
    copyright = models.CharField(max_length=500, blank=True, help_text="Copyright notice from the file's metadata.")
    artist = models.CharField(max_length=500, blank=True, help_text="Artist or creator from the file's metadata.")
    licence_hints = models.JSONField(default=list, blank=True,
                                     help_text="Every hint found: [{kind, value, ...}] from the page and the file.")
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"provenance of image {self.image_id}"

    @property
    def opted_out(self) -> bool:
        return self.optout_status == OptOutStatus.OPTED_OUT

    @property
    def licence_known(self) -> bool:
        return bool(self.licence)


class NearDuplicatePair(models.Model):
    """Two images of one owner whose perceptual hashes are within the near-duplicate distance.

    Written when an image arrives (an indexed lookup, gallery/neardup.py), read by the duplicates page, so
    that page never compares all pairs. `manage.py rebuild_near_duplicates` recomputes them.
    """

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    image = models.ForeignKey(Image, on_delete=models.CASCADE, related_name="+")
    other = models.ForeignKey(Image, on_delete=models.CASCADE, related_name="+")
    distance = models.PositiveSmallIntegerField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["image", "other"], name="gallery_neardup_pair_unique")]
        indexes = [models.Index(fields=["owner", "image"], name="gallery_neardup_owner")]

    def __str__(self) -> str:
        return f"{self.image_id}~{self.other_id} ({self.distance})"


class ImageEmbedding(models.Model):
    """An image's CLIP vector (float32, L2-normalised) for semantic search (gallery/semantic/store.py)."""

    image = models.OneToOneField(Image, primary_key=True, on_delete=models.CASCADE, related_name="embedding")
    model = models.CharField(max_length=100, db_index=True, help_text="Which model made it; others never compare.")
    vector = models.BinaryField()
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"embedding of {self.image_id} ({self.model})"

"""Training JSON API: runs (create, list, status, cancel, resume), LoRAs and base models.

Same access rules as the pages: other users' runs and private LoRAs are 404. Invalid input is a 422
whose `detail` lists every bad field, in the same shape for schema errors and for business rules.
"""

from datetime import datetime
from typing import Annotated, Literal

from django.shortcuts import get_object_or_404
from ninja import Field, Router, Schema, Status
from ninja import Path as PathParam
from ninja.errors import HttpError, ValidationError
from ninja.pagination import paginate

from imagineer.api import Pagination
from imagineer.jobs import QueueUnavailable
from imagineer.quotas import QuotaExceeded

from ..models import BaseModel, LoraModel, TrainingRun
from . import selectors, services
from .params import (
    MAX_EPOCHS,
    MAX_SAMPLE_PROMPT,
    MAX_TRIGGER_WORD,
    MODULE_SET_CHOICES,
    OPTIMIZER_CHOICES,
    PARAMS,
    SCHEDULER_CHOICES,
    RunInputError,
)

router = Router(tags=["training"])

MAX_ID = 2**63 - 1
Id = Annotated[int, Field(ge=1, le=MAX_ID)]


def _bounds(name: str) -> dict:
    param = PARAMS[name]
    bounds = {"le": param.maximum}
    bounds["gt" if param.exclusive_minimum else "ge"] = param.minimum
    if param.kind is float:
        bounds["allow_inf_nan"] = False
    return bounds


class RunIn(Schema):
    album_ids: list[Id] = Field(..., min_length=1, max_length=100, description="Albums to train on (yours).")
    name: str = Field("", max_length=100, description="Empty: the album names and the date.")
    base_model: str | None = Field(None, max_length=100, description="Base model name; default: the default one.")
    steps: int | None = Field(None, **_bounds("steps"))
    epochs: int | None = Field(None, ge=1, le=MAX_EPOCHS, description="Instead of steps: passes over the dataset.")
    batch_size: int | None = Field(None, **_bounds("batch_size"))
    learning_rate: float | None = Field(None, **_bounds("learning_rate"))
    rank: int | None = Field(None, **_bounds("rank"))
    alpha: float | None = Field(None, **_bounds("alpha"))
    resolution: int | None = Field(None, multiple_of=8, **_bounds("resolution"))
    seed: int | None = Field(None, **_bounds("seed"))
    mixed_precision: Literal["no", "fp16", "bf16"] | None = None
    gradient_checkpointing: bool | None = None
    caption_dropout: float | None = Field(None, **_bounds("caption_dropout"))
    center_crop: bool | None = None
    random_flip: bool | None = None
    checkpoint_every: int | None = Field(None, **_bounds("checkpoint_every"))
    sample_every: int | None = Field(None, **_bounds("sample_every"))
    sample_prompt: str | None = Field(None, max_length=MAX_SAMPLE_PROMPT)
    optimizer: Literal[tuple(v for v, _ in OPTIMIZER_CHOICES)] | None = Field(  # type: ignore[valid-type]
        None, description=PARAMS["optimizer"].help)
    lr_scheduler: Literal[tuple(v for v, _ in SCHEDULER_CHOICES)] | None = None  # type: ignore[valid-type]
    lr_warmup_steps: int | None = Field(None, **_bounds("lr_warmup_steps"))
    gradient_accumulation: int | None = Field(None, **_bounds("gradient_accumulation"))
    max_grad_norm: float | None = Field(None, **_bounds("max_grad_norm"))
    weight_decay: float | None = Field(None, **_bounds("weight_decay"))
    min_snr_gamma: float | None = Field(None, **_bounds("min_snr_gamma"))
    noise_offset: float | None = Field(None, **_bounds("noise_offset"))
    lora_modules: Literal[tuple(v for v, _ in MODULE_SET_CHOICES)] | None = Field(  # type: ignore[valid-type]
        None, description="attention, kohya (attention + feed-forward + proj_in/out) or locon (+ convolutions).")
    train_text_encoder: bool | None = None
    text_encoder_lr: float | None = Field(None, **_bounds("text_encoder_lr"))
    trigger_word: str | None = Field(None, max_length=MAX_TRIGGER_WORD)
    shuffle_tags: bool | None = None
    keep_tags: int | None = Field(None, **_bounds("keep_tags"))
    clip_skip: int | None = Field(None, **_bounds("clip_skip"))
    cache: bool | None = Field(None, description=PARAMS["cache"].help)


class LoraRef(Schema):
    id: int
    name: str


class RunOut(Schema):
    id: int
    name: str
    owner: str
    status: str
    stage: str
    progress: float
    step: int
    total_steps: int
    loss: float | None
    message: str
    error: str
    eta_seconds: float | None
    steps_per_second: float | None
    resumed_from: int | None
    attempts: int
    base_model: str
    album_ids: list[int]
    album_names: list[str]
    image_count: int
    steps: int
    batch_size: int
    learning_rate: float
    rank: int
    alpha: float
    resolution: int
    seed: int
    mixed_precision: str
    options: dict = Field(description="Optimizer, scheduler, LoRA layers, text encoder, caption and loss options.")
    lora: LoraRef | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    url: str

    @staticmethod
    def resolve_owner(obj: TrainingRun) -> str:
        return obj.owner.get_username()

    @staticmethod
    def resolve_loss(obj: TrainingRun) -> float | None:
        return obj.last_loss

    @staticmethod
    def resolve_eta_seconds(obj: TrainingRun) -> float | None:
        return obj.eta.total_seconds() if obj.eta is not None else None

    @staticmethod
    def resolve_base_model(obj: TrainingRun) -> str:
        return obj.base_model.name

    @staticmethod
    def resolve_album_ids(obj: TrainingRun) -> list[int]:
        return [a.pk for a in obj.albums.all()]

    @staticmethod
    def resolve_image_count(obj: TrainingRun) -> int:
        return len(obj.dataset)

    @staticmethod
    def resolve_lora(obj: TrainingRun) -> LoraModel | None:
        return getattr(obj, "lora", None)  # selected with the run; absent when none was registered

    @staticmethod
    def resolve_url(obj: TrainingRun) -> str:
        return obj.get_absolute_url()


class RunDetailOut(RunOut):
    loss_history: list[list[float]] = Field(description="[[step, mean loss], ...], at most a few hundred points.")


class LoraOut(Schema):
    id: int
    name: str
    friendly_name: str
    owner: str
    base_model: str
    default_weight: float
    trigger_words: str
    is_public: bool
    training_run_id: int | None
    created_at: datetime
    url: str

    @staticmethod
    def resolve_owner(obj: LoraModel) -> str:
        return obj.owner.get_username()

    @staticmethod
    def resolve_base_model(obj: LoraModel) -> str:
        return obj.base_model.name

    @staticmethod
    def resolve_url(obj: LoraModel) -> str:
        return obj.get_absolute_url()


class BaseModelOut(Schema):
    id: int
    name: str
    kind: str
    source_type: str
    native_size: int = Field(..., description="The size it was trained at: a run's resolution when none is given.")
    description: str
    is_default: bool


class FieldError(Schema):
    loc: list[str | int]
    msg: str
    type: str


class ValidationErrorOut(Schema):
    detail: list[FieldError]


class Message(Schema):
    detail: str


_ERROR_FIELD = {"__all__": None}
# Documented with every operation so clients (and schemathesis) know the error shapes.
ERRORS = {401: Message, 422: ValidationErrorOut}
NOT_FOUND = {**ERRORS, 404: Message}


def _field_errors(exc: RunInputError) -> ValidationError:
    errors = []
    for field, messages in exc.errors.items():
        loc: list[str | int] = ["body", "payload"]
        if _ERROR_FIELD.get(field, field):
            loc.append(field)
        errors.extend({"loc": loc, "msg": message, "type": "value_error"} for message in messages)
    return ValidationError(errors)


def _run(request, run_id: int) -> TrainingRun:
    return get_object_or_404(selectors.runs_visible_to(request.user).select_related("lora")
                             .prefetch_related("albums"), pk=run_id)


RunId = Annotated[int, PathParam(..., ge=1, le=MAX_ID)]


@router.post("/training/runs", response={201: RunOut, 400: Message, **ERRORS, 429: Message, 503: Message},
             summary="Start a training run on albums (429 when you already have your limit queued or running)")
def create_run(request, payload: RunIn):
    data = payload.dict()
    album_ids, name, base_model = data.pop("album_ids"), data.pop("name"), data.pop("base_model")
    try:
        run = services.run_create(owner=request.user, album_ids=album_ids, params=data, name=name,
                                  base_model=base_model)
    except RunInputError as exc:
        raise _field_errors(exc)
    except QuotaExceeded as exc:
        raise HttpError(429, str(exc))
    except QueueUnavailable as exc:
        raise HttpError(503, str(exc))
    return Status(201, _run(request, run.pk))


@router.get("/training/runs", response={200: list[RunOut], **ERRORS}, summary="Your training runs, newest first")
@paginate(Pagination)
def list_runs(request, status: Literal["queued", "running", "succeeded", "failed", "cancelled"] | None = None,
              everyone: bool = False):
    qs = selectors.runs_visible_to(request.user).select_related("lora").prefetch_related("albums")
    if not (everyone and request.user.is_staff):
        qs = qs.filter(owner=request.user)
    if status:
        qs = qs.filter(status=status)
    return qs


@router.get("/training/runs/{run_id}", response={200: RunDetailOut, **NOT_FOUND}, summary="A run's status and progress")
def get_run(request, run_id: RunId):
    return _run(request, run_id)


@router.post("/training/runs/{run_id}/cancel", response={200: RunOut, **NOT_FOUND, 409: Message},
             summary="Cancel a run (it saves a checkpoint first, so it can be resumed)")
def cancel_run(request, run_id: RunId):
    run = _run(request, run_id)
    if not services.run_cancel(run=run):
        raise HttpError(409, f"The run has already ended ({run.status}).")
    return _run(request, run_id)


@router.post("/training/runs/{run_id}/resume",
             response={200: RunOut, **NOT_FOUND, 409: Message, 429: Message, 503: Message},
             summary="Resume a cancelled or failed run from its last checkpoint")
def resume_run(request, run_id: RunId):
    run = _run(request, run_id)
    try:
        services.run_resume(run=run)
    except services.RunStateError as exc:
        raise HttpError(409, str(exc))
    except QuotaExceeded as exc:
        raise HttpError(429, str(exc))
    except QueueUnavailable as exc:
        raise HttpError(503, str(exc))
    return _run(request, run_id)


@router.get("/training/loras", response={200: list[LoraOut], **ERRORS},
            summary="LoRAs you can use: yours and public ones")
@paginate(Pagination)
def list_loras(request, mine: bool = False):
    qs = selectors.loras_visible_to(request.user)
    return qs.filter(owner=request.user) if mine else qs


@router.get("/training/loras/{lora_id}", response={200: LoraOut, **NOT_FOUND})
def get_lora(request, lora_id: Annotated[int, PathParam(..., ge=1, le=MAX_ID)]):
    return get_object_or_404(selectors.loras_visible_to(request.user), pk=lora_id)


@router.get("/training/base-models", response={200: list[BaseModelOut], 401: Message}, summary="Registered base models")
def list_base_models(request):
    return list(BaseModel.objects.order_by("-is_default", "name"))


# --- choosing and judging a LoRA: the dataset check, a kept checkpoint as a LoRA, evaluation grids -------------


class DatasetWarningOut(Schema):
    code: str = Field(description="few_images, too_many_repeats, small_images, no_caption, duplicates, ...")
    message: str
    image_ids: list[int]


class CheckpointsOut(Schema):
    steps: list[int] = Field(description="The kept checkpoints' steps, oldest first; each can become a LoRA.")


class GridIn(Schema):
    prompts: list[str] = Field(..., min_length=1, max_length=8, description="One row per prompt; row i uses seed + i.")
    weights: list[float] = Field([1.0], min_length=1, max_length=4,
                                 description="LoRA weights: one column per LoRA file and weight.")
    seed: int = Field(0, ge=0, le=2**31 - 1)
    steps: int = Field(20, ge=1, le=60)


class CompareIn(GridIn):
    lora_ids: list[Id] = Field(..., min_length=2, description="LoRAs of one base model that you may use.")


class GridCellOut(Schema):
    row: int
    col: int
    seed: int
    url: str


class GridOut(Schema):
    id: int
    title: str
    status: str
    progress: float
    message: str
    error: str
    run_id: int | None
    base_model: str
    prompts: list[str]
    columns: list[str] = Field(description="Column labels: the checkpoint step or LoRA name, and the weight.")
    seed: int
    steps: int
    cells: list[GridCellOut]
    grid_url: str | None = Field(description="The whole grid as one PNG, once it is finished.")
    url: str

    @staticmethod
    def resolve_base_model(obj) -> str:
        return obj.base_model.name

    @staticmethod
    def resolve_columns(obj) -> list[str]:
        return [column["label"] for column in obj.columns]

    @staticmethod
    def resolve_cells(obj) -> list[dict]:
        return [{"row": c["row"], "col": c["col"], "seed": c.get("seed", obj.seed + c["row"]),
                 "url": f"/api/training/grids/{obj.pk}/cells/{c['row']}/{c['col']}.png"} for c in obj.cells]

    @staticmethod
    def resolve_grid_url(obj) -> str | None:
        return f"/api/training/grids/{obj.pk}/grid.png" if obj.grid_file else None

    @staticmethod
    def resolve_url(obj) -> str:
        return obj.get_absolute_url()


GridId = Annotated[int, PathParam(..., ge=1, le=MAX_ID)]


def _grid(request, grid_id: int):
    return get_object_or_404(selectors.grids_visible_to(request.user), pk=grid_id)


@router.get("/training/runs/{run_id}/dataset-check", response={200: list[DatasetWarningOut], **NOT_FOUND},
            summary="What the dataset check warns about for this run's snapshot (warnings, never blocks)")
def run_dataset_check(request, run_id: RunId):
    from .dataset_check import check_run

    return check_run(_run(request, run_id))


@router.get("/training/runs/{run_id}/checkpoints", response={200: CheckpointsOut, **NOT_FOUND},
            summary="The run's kept checkpoints")
def run_checkpoints(request, run_id: RunId):
    return {"steps": services.stored_checkpoints(_run(request, run_id))}


@router.post("/training/runs/{run_id}/checkpoints/{step}/lora", response={201: LoraOut, **NOT_FOUND, 409: Message},
             summary="Register the LoRA of a kept checkpoint (both file formats), to use the best step")
def run_checkpoint_lora(request, run_id: RunId, step: Annotated[int, PathParam(..., ge=1, le=10**9)]):
    run = _run(request, run_id)
    if not selectors.can_manage(request.user, run):
        raise HttpError(404, "Not Found")
    try:
        return Status(201, services.lora_from_checkpoint(run=run, step=step))
    except services.RunStateError as exc:
        raise HttpError(409, str(exc))


@router.post("/training/runs/{run_id}/grids", response={201: GridOut, 400: Message, **NOT_FOUND, 503: Message},
             summary="Render the run's kept checkpoints × prompts (× LoRA weights) on the generate queue")
def run_grid_create(request, run_id: RunId, payload: GridIn):
    from . import evaluation

    run = _run(request, run_id)
    try:
        grid = evaluation.grid_for_run(run=run, owner=request.user, **payload.dict())
    except RunInputError as exc:
        raise _field_errors(exc)
    except QueueUnavailable as exc:
        raise HttpError(503, str(exc))
    return Status(201, _grid(request, grid.pk))


@router.post("/training/grids/compare", response={201: GridOut, 400: Message, **ERRORS, 503: Message},
             summary="Two or more LoRAs side by side on the same prompts and seeds")
def grid_compare(request, payload: CompareIn):
    from . import evaluation

    data = payload.dict()
    ids = data.pop("lora_ids")
    usable = {lora.pk: lora for lora in selectors.loras_visible_to(request.user).filter(pk__in=ids)
              .select_related("base_model") if lora.is_usable_by(request.user)}
    try:
        if set(ids) - set(usable):
            raise RunInputError({"lora_ids": ["No such LoRA."]})
        grid = evaluation.grid_compare(owner=request.user, loras=[usable[i] for i in ids], **data)
    except RunInputError as exc:
        raise _field_errors(exc)
    except QueueUnavailable as exc:
        raise HttpError(503, str(exc))
    return Status(201, _grid(request, grid.pk))


@router.get("/training/grids/{grid_id}", response={200: GridOut, **NOT_FOUND}, summary="A grid's progress and images")
def get_grid(request, grid_id: GridId):
    return _grid(request, grid_id)


@router.get("/training/grids/{grid_id}/grid.png", response={200: None, **NOT_FOUND},
            summary="The finished grid as one PNG (with row and column labels)")
def grid_png(request, grid_id: GridId):
    from imagineer.artifacts import artifact_response

    grid = _grid(request, grid_id)
    if not grid.grid_file:
        raise HttpError(404, "The grid is not finished.")
    return artifact_response(grid.grid_file, filename=f"grid-{grid.pk}.png", content_type="image/png")


@router.get("/training/grids/{grid_id}/cells/{row}/{col}.png", response={200: None, **NOT_FOUND},
            summary="One image of the grid")
def grid_cell_png(request, grid_id: GridId, row: Annotated[int, PathParam(..., ge=0, le=1000)],
                  col: Annotated[int, PathParam(..., ge=0, le=1000)]):
    from imagineer.artifacts import artifact_response

    grid = _grid(request, grid_id)
    key = grid.cell_file(row, col)
    if key is None:
        raise HttpError(404, "No such image.")
    return artifact_response(key, filename=f"grid-{grid.pk}-r{row}-c{col}.png", as_attachment=False,
                             content_type="image/png")

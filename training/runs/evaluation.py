"""Evaluation grids: a run's checkpoints (or any LoRAs, to compare them) × prompts × LoRA weights, same seeds.

`grid_for_run` and `grid_compare` validate and queue a grid on the `generate` queue; `evaluation_run` is the
worker's half: one pipeline load, each column's LoRA applied in turn, each row's prompt at seed `seed + row`,
every cell stored, then the whole grid as one labelled PNG.
"""

from __future__ import annotations

import io
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from django.db import transaction

from imagineer.artifacts import artifact_open, artifact_save
from imagineer.jobs import JobCancelled, JobContext, JobError, enqueue_job, ensure_queue_available

from ..models import EvaluationGrid, LoraModel, TrainingRun
from .artifacts import checkpoint_prefix, stored_checkpoints
from .params import RunInputError

MAX_PROMPTS = 8
MAX_WEIGHTS = 4
MAX_CELLS = 64
MAX_PROMPT = 500
MAX_STEPS = 60
LABEL_HEIGHT = 18


def _clean(prompts: Sequence[str], weights: Sequence[float], steps: int, columns: int) -> tuple[list[str], list[float]]:
    errors: dict[str, list[str]] = {}
    prompts = [p.strip() for p in prompts if p and p.strip()]
    if not prompts:
        errors["prompts"] = ["Give at least one prompt (one per line)."]
    elif len(prompts) > MAX_PROMPTS or any(len(p) > MAX_PROMPT for p in prompts):
        errors["prompts"] = [f"At most {MAX_PROMPTS} prompts of at most {MAX_PROMPT} characters each."]
    try:
        weights = [float(w) for w in weights] or [1.0]
    except (TypeError, ValueError):
        errors["weights"] = ["LoRA weights are numbers, e.g. 0.6, 1.0."]
        weights = []
    if weights and (len(weights) > MAX_WEIGHTS or any(not -4 <= w <= 4 for w in weights)):
        errors["weights"] = [f"At most {MAX_WEIGHTS} LoRA weights, each between -4 and 4."]
    if not 1 <= steps <= MAX_STEPS:
        errors["steps"] = [f"Steps must be between 1 and {MAX_STEPS}."]
    if not errors and len(prompts) * columns * len(weights) > MAX_CELLS:
        errors["__all__"] = [f"That is {len(prompts) * columns * len(weights)} images; a grid holds at most "
                             f"{MAX_CELLS}. Use fewer prompts, weights or checkpoints."]
    if errors:
        raise RunInputError(errors)
    return prompts, list(dict.fromkeys(weights))


def grid_for_run(*, run: TrainingRun, owner, prompts: Sequence[str], weights: Sequence[float] = (1.0,),
                 seed: int = 0, steps: int = 20, enqueue: bool = True) -> EvaluationGrid:
    """A grid of the run's kept checkpoints (and its final LoRA) on the prompts. RunInputError when invalid."""
    sources = [(f"step {step}", f"{checkpoint_prefix(run, step)}/pytorch_lora_weights.safetensors", None)
               for step in stored_checkpoints(run)]
    final = LoraModel.objects.filter(training_run=run).first()
    if final is not None and f"step {run.step}" not in {label for label, _, _ in sources}:
        sources.append((f"final ({final.name})", final.diffusers_file, final.pk))
    if not sources:
        raise RunInputError({"__all__": ["This run has no kept checkpoints or LoRA yet."]})
    prompts, weights = _clean(prompts, weights, steps, len(sources))
    return _create(owner=owner, run=run, base_model=run.base_model, title=f"{run.name}: checkpoints",
                   sources=sources, prompts=prompts, weights=weights, seed=seed, steps=steps,
                   size=run.resolution, enqueue=enqueue)


def grid_compare(*, owner, loras: Sequence[LoraModel], prompts: Sequence[str], weights: Sequence[float] = (1.0,),
                 seed: int = 0, steps: int = 20, enqueue: bool = True) -> EvaluationGrid:
    """Two (or more) LoRAs side by side on the same prompts and seeds; they must share a base model."""
    loras = list(dict.fromkeys(loras))
    if len(loras) < 2:
        raise RunInputError({"loras": ["Choose two different LoRAs to compare."]})
    if any(not lora.is_usable_by(owner) for lora in loras):
        raise RunInputError({"loras": ["No such LoRA."]})
    if len({lora.base_model_id for lora in loras}) > 1:
        raise RunInputError({"loras": ["The LoRAs are for different base models; compare LoRAs of one model."]})
    prompts, weights = _clean(prompts, weights, steps, len(loras))
    base = loras[0].base_model
    sources = [(lora.name, lora.diffusers_file, lora.pk) for lora in loras]
    return _create(owner=owner, run=None, base_model=base, title=" vs ".join(lora.name for lora in loras),
                   sources=sources, prompts=prompts, weights=weights, seed=seed, steps=steps,
                   size=base.native_size, enqueue=enqueue)


def _create(*, owner, run, base_model, title, sources, prompts, weights, seed, steps, size, enqueue):
    columns = [{"label": label if len(weights) == 1 else f"{label} × {weight:g}", "file": key, "weight": weight,
                "lora_id": lora_id}
               for label, key, lora_id in sources for weight in weights]
    if enqueue:
        ensure_queue_available()
    with transaction.atomic():
        grid = EvaluationGrid.objects.create(
            owner=owner, run=run, base_model=base_model, title=title[:200], columns=columns, prompts=prompts,
            seed=seed, steps=steps, width=size, height=size, message="Waiting for a generate worker…")
        if enqueue:
            enqueue_job(grid)
    return grid


def evaluation_run(ctx: JobContext) -> None:
    """The worker's half: every cell, then the grid image (run_job calls it with the claimed row)."""
    # The ML library imports torch/diffusers inside its functions; only the worker gets here.
    from ..basemodels import BaseModelUnavailable, local_source
    from ..ml.errors import MLError
    from ..ml.generate import generate
    from ..ml.pipelines import LoraSpec, apply_loras, pipeline_cache

    grid: EvaluationGrid = ctx.job
    base = grid.base_model
    total = len(grid.columns) * len(grid.prompts)
    ctx.update(progress=0.0, message=f"Loading {base.name}…")
    folder = Path(tempfile.mkdtemp(prefix=f"grid-{grid.pk}-"))
    cells: list[dict[str, Any]] = []
    pictures: dict[tuple[int, int], Any] = {}
    try:
        try:
            with local_source(base) as (source, source_type):
                pipe = pipeline_cache().get(source, kind=base.kind, source_type=source_type, key=base.cache_key)
        except (MLError, ValueError, OSError, BaseModelUnavailable) as exc:
            raise JobError(f"Could not load the model: {exc}") from exc
        for col, column in enumerate(grid.columns):
            path = folder / f"col-{col}.safetensors"
            try:
                with artifact_open(column["file"]) as src, path.open("wb") as dst:
                    shutil.copyfileobj(src, dst)
            except FileNotFoundError:
                raise JobError(f"The LoRA file of “{column['label']}” is gone (a pruned checkpoint?).") from None
            try:
                apply_loras(pipe, [LoraSpec(f"grid{grid.pk}c{col}", str(path), float(column["weight"]))])
            except (MLError, ValueError, OSError) as exc:
                raise JobError(f"Could not load the LoRA of “{column['label']}”: {exc}") from exc
            for row, prompt in enumerate(grid.prompts):
                if ctx.cancel_requested():
                    raise JobCancelled()
                seed = grid.seed + row
                image = generate(pipe, prompt=prompt, negative_prompt=grid.negative_prompt, scheduler=grid.scheduler,
                                 steps=grid.steps, guidance_scale=grid.guidance_scale, seed=seed, width=grid.width,
                                 height=grid.height)[0]
                key = artifact_save(f"{grid.artifact_prefix}/r{row}-c{col}.png", _png(image))
                cells.append({"row": row, "col": col, "seed": seed, "file": key})
                pictures[(row, col)] = image
                ctx.update(progress=0.97 * len(cells) / total, cells=cells,
                           message=f"Image {len(cells)} of {total}", check_cancel=False)
        apply_loras(pipe, [])
        sheet = compose_grid(pictures, [c["label"] for c in grid.columns], len(grid.prompts), grid.width,
                             grid.height)
        key = artifact_save(f"{grid.artifact_prefix}/grid.png", _png(sheet))
        ctx.update(progress=1.0, grid_file=key, cells=cells, message=f"{total} images.", check_cancel=False)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _png(image: Any) -> bytes:
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def compose_grid(pictures: dict[tuple[int, int], Any], labels: Sequence[str], rows: int, width: int,
                 height: int) -> Any:
    """One image: a label strip on top, then the cells, columns left to right, rows (prompts) top to bottom."""
    from PIL import Image, ImageDraw

    sheet = Image.new("RGB", (width * len(labels), LABEL_HEIGHT + height * rows), "white")
    draw = ImageDraw.Draw(sheet)
    for col, label in enumerate(labels):
        draw.text((col * width + 2, 3), label[: max(4, width // 6)], fill="black")
    for (row, col), picture in pictures.items():
        sheet.paste(picture.convert("RGB"), (col * width, LABEL_HEIGHT + row * height))
    return sheet

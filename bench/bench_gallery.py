"""Gallery benchmarks.

1. `index_images` on generated 1600×1200 JPEGs against a bare thumbnail loop with the same
   library (Pillow, draft-mode decode, the same two WebP outputs), in the same run:
   ≥ 0.8× on one process, ≥ 1.5× the single-process bare loop with two workers.
   The same bare loop with pyvips is recorded too (why Pillow: see notes; pyvips is a dev requirement).
2. Pages with 100,000 images in PostgreSQL under 16 concurrent clients on loopback, each against a trivial
   view (/livez) served by the same server, requests interleaved: the grid and the image page with similar
   images (p95 within 3×), the duplicates page and a semantic (CLIP text) query (recorded).
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from common import ROOT, Result, free_port, p95, postgres_url, setup_django, timed


def _photo(seed: int) -> bytes:
    """A photo-like JPEG: smooth colour fields plus sensor noise, ~450 KB like a real 2 MP photo."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    base = Image.fromarray(rng.integers(0, 255, (12, 16, 3), dtype=np.uint8)).resize((1600, 1200), Image.BICUBIC)
    noisy = np.asarray(base).astype(np.int16) + rng.normal(0, 8, (1200, 1600, 3)).astype(np.int16)
    out = io.BytesIO()
    Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(out, "JPEG", quality=88)
    return out.getvalue()


def _bare_pillow(paths: list[Path]) -> None:
    from PIL import Image

    from gallery.imaging import WEBP_METHOD

    for path in paths:
        with Image.open(path) as im:
            im.draft("RGB", (1280, 1280))
            im.load()
            preview = im.convert("RGB")
        preview.thumbnail((1280, 1280), Image.Resampling.BICUBIC, reducing_gap=2.0)
        thumb = preview.copy()
        thumb.thumbnail((300, 300), Image.Resampling.BICUBIC, reducing_gap=2.0)
        for picture in (preview, thumb):
            picture.save(io.BytesIO(), "WEBP", quality=82, method=WEBP_METHOD)


def _bare_vips(paths: list[Path]) -> None:
    import pyvips

    for path in paths:
        preview = pyvips.Image.thumbnail(str(path), 1280).copy_memory()
        preview.webpsave_buffer(Q=82, effort=2)
        preview.thumbnail_image(300).webpsave_buffer(Q=82, effort=2)


def bench_index(quick: bool) -> list[Result]:
    data_dir = setup_django()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.test.utils import override_settings

    call_command("migrate", verbosity=0)
    count = 60 if quick else 500
    folder = Path(tempfile.mkdtemp(prefix="bench-photos-"))
    for i in range(count):
        (folder / f"photo{i:04d}.jpg").write_bytes(_photo(i))
    paths = sorted(folder.iterdir())
    _bare_pillow(paths[:5])  # warm caches and imports
    users = get_user_model()
    static = {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}
    # Alternate baseline and ours and keep each one's best round, so a noisy neighbour
    # on the machine hurts both sides alike.
    rounds = 1 if quick else 2
    bare_s = vips_s = float("inf")
    runs = {1: float("inf"), 2: float("inf")}
    for round_no in range(rounds):
        bare_s = min(bare_s, timed(_bare_pillow, paths)[0])
        vips_s = min(vips_s, timed(_bare_vips, paths)[0])
        for workers in (1, 2):
            owner = users.objects.create_user(f"bench{workers}-{round_no}", f"b{workers}{round_no}@example.com", "x")
            media = data_dir / f"media{workers}-{round_no}"
            storage = {"BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": media}}
            with override_settings(STORAGES={"default": storage, "staticfiles": static}):
                seconds, _ = timed(call_command, "index_images", str(folder), "--owner", owner.username,
                                   "--workers", str(workers), "--no-progress", stdout=io.StringIO())
            runs[workers] = min(runs[workers], seconds)
    per_file = {k: v / count for k, v in runs.items()}
    ratio1 = bare_s / runs[1]
    ratio2 = bare_s / runs[2]
    notes = (f"{count} files; Pillow bare loop {bare_s / count * 1000:.1f} ms/file, pyvips bare loop "
             f"{vips_s / count * 1000:.1f} ms/file. Pillow is kept: ingest must fully decode with Pillow to "
             "validate anyway, and its draft decode serves validation and both WebPs at once.")
    return [
        Result("gallery", "index_images, 1 process", count / runs[1], count / bare_s, "files/s", ratio1, "≥ 0.8",
               ratio1 >= 0.8, notes, {"ms_per_file": per_file[1] * 1000}),
        Result("gallery", "index_images, 2 workers", count / runs[2], count / bare_s, "files/s", ratio2,
               "≥ 1.5 (vs 1-process bare loop)", ratio2 >= 1.5, f"{os.cpu_count()} cores"),
        Result("gallery", "pyvips bare loop vs Pillow bare loop", count / vips_s, count / bare_s, "files/s",
               bare_s / vips_s, "record", None, "same outputs: 1280 px and 300 px WebP, effort/method 2"),
    ]


def _seed_grid_database(database_url: str, images: int, clip_path: str) -> None:
    """Create a fresh database, migrate it and bulk-insert `images` rows (no files needed for these pages):
    random perceptual hashes with a planted near copy of every 100th image (and its stored pair), and a random
    CLIP-sized vector per image under the tag of the tiny CLIP at `clip_path`."""
    import psycopg

    from imagineer.settings.env import parse_database_url

    cfg = parse_database_url(database_url)
    admin = psycopg.connect(host=cfg["HOST"], port=cfg["PORT"] or 5432, user=cfg["USER"], password=cfg["PASSWORD"],
                            dbname="postgres", autocommit=True)
    with admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{cfg["NAME"]}"')
        admin.execute(f'CREATE DATABASE "{cfg["NAME"]}"')
    env = {**os.environ, "DATABASE_URL": database_url, "DJANGO_SETTINGS_MODULE": "imagineer.settings.test",
           "IMAGINEER_CLIP_MODEL": clip_path}
    subprocess.run([sys.executable, "manage.py", "migrate", "--verbosity", "0"], cwd=ROOT, env=env, check=True)
    script = f"""
import random
import numpy as np
from django.contrib.auth import get_user_model
from gallery.models import Image, ImageEmbedding, NearDuplicatePair
from gallery.neardup import phash_bands
from gallery.semantic.clip import model_tag
users = [get_user_model().objects.create_user(f"u{{i}}", f"u{{i}}@example.com", "pw") for i in range(10)]
rng = random.Random(0)
vectors = np.random.default_rng(0).normal(size=({images}, 32)).astype(np.float32)
vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
tag = model_tag()
batch = []
def row(n, phash):
    sha = f"{{n:064x}}"
    b0, b1, b2, b3 = phash_bands(phash)
    return Image(owner=users[n % 10], file=f"originals/{{sha}}.jpg", sha256=sha, phash=phash,
                 phash_b0=b0, phash_b1=b1, phash_b2=b2, phash_b3=b3,
                 width=1600, height=1200, format="JPEG", mime="image/jpeg", bytes=400000,
                 title=f"photo {{n}}", source="upload", is_public=(n % 5 == 0), is_nsfw=(n % 50 == 0),
                 thumbnail=f"thumbs/{{sha}}.webp", preview=f"previews/{{sha}}.webp", derivatives="ready")
previous = None
for n in range({images}):
    # Every 100th image (of u1, the measured user) is a near copy, 2 bits off, of u1's image 10 rows earlier.
    if n % 100 == 11 and previous is not None:
        phash = previous ^ 0b101
    else:
        phash = rng.getrandbits(63)
    if n % 100 == 1:
        previous = phash
    batch.append(row(n, phash))
    if len(batch) == 5000:
        Image.objects.bulk_create(batch); batch = []
Image.objects.bulk_create(batch)
ids = list(Image.objects.order_by("pk").values_list("pk", "owner_id"))
ImageEmbedding.objects.bulk_create(
    [ImageEmbedding(image_id=pk, model=tag, vector=vectors[i].tobytes()) for i, (pk, _) in enumerate(ids)],
    batch_size=5000)
NearDuplicatePair.objects.bulk_create(
    [NearDuplicatePair(owner_id=ids[i][1], image_id=ids[i - 10][0], other_id=ids[i][0], distance=2)
     for i in range(len(ids)) if i % 100 == 11], batch_size=5000)
"""
    subprocess.run([sys.executable, "manage.py", "shell", "-c", script], cwd=ROOT, env=env, check=True)
    subprocess.run([sys.executable, "manage.py", "dbshell"], cwd=ROOT, env=env, input="ANALYZE;\n", text=True,
                   check=False, capture_output=True)


def _session_cookie(env: dict) -> tuple[str, list[int]]:
    script = """
from django.contrib.auth import get_user_model
from django.contrib.sessions.backends.db import SessionStore
from django.contrib.auth import SESSION_KEY, BACKEND_SESSION_KEY, HASH_SESSION_KEY
from gallery.models import Image
u = get_user_model().objects.get(username="u1")
s = SessionStore(); s[SESSION_KEY] = str(u.pk); s[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
s[HASH_SESSION_KEY] = u.get_session_auth_hash(); s.create()
ids = Image.objects.filter(owner=u).order_by("?").values_list("pk", flat=True)[:50]
print(s.session_key, ",".join(str(pk) for pk in ids))
"""
    out = subprocess.run([sys.executable, "manage.py", "shell", "-c", script], cwd=ROOT, env=env, check=True,
                         capture_output=True, text=True)
    key, ids = out.stdout.strip().splitlines()[-1].split(" ")
    return key, [int(i) for i in ids.split(",")]


# Each page is measured against the trivial view (/livez) in the same server run, requests interleaved.
PAGES = {
    "grid": ("grid p95", 'class="tile'),
    "image": ("image page with similar images p95", "Similar images"),
    "duplicates": ("duplicates page p95", "dup-group"),
    "semantic": ("semantic query p95", 'class="tile'),
}
QUERIES = ["a red fox", "snow", "a city at night", "portrait", "green forest", "cat"]


def bench_grid(quick: bool) -> list[Result]:
    import requests

    base_url = postgres_url() or os.environ.get("DATABASE_URL", "")
    if not base_url.startswith("postgres"):
        return [Result("gallery", f"{label}, PostgreSQL", float("nan"), float("nan"), "ms", float("nan"),
                       "≤ 3× trivial" if kind in ("grid", "image") else "record", None,
                       "skipped: set DATABASE_URL to a PostgreSQL server") for kind, (label, _) in PAGES.items()]
    database_url = base_url.rsplit("/", 1)[0] + "/imagineer_bench"
    images = 20_000 if quick else 100_000
    from gallery.semantic.clip import build_tiny

    clip_path = str(build_tiny(Path(tempfile.mkdtemp(prefix="bench-clip-")) / "tiny-clip"))
    _seed_grid_database(database_url, images, clip_path)
    port = free_port()
    env = {**os.environ, "DATABASE_URL": database_url, "DJANGO_SETTINGS_MODULE": "imagineer.settings.test",
           "IMAGINEER_DATA_DIR": tempfile.mkdtemp(prefix="bench-grid-"), "IMAGINEER_CLIP_MODEL": clip_path}
    cookie, image_ids = _session_cookie(env)
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "imagineer.wsgi", "--bind", f"127.0.0.1:{port}", "--workers", "2",
         "--threads", "4", "--log-level", "warning", "--timeout", "300"],
        cwd=ROOT, env=env,
    )
    base = f"http://127.0.0.1:{port}"

    def path_for(kind: str, n: int) -> str:
        if kind == "grid":
            return "/gallery/"
        if kind == "image":
            return f"/gallery/images/{image_ids[n % len(image_ids)]}/"
        if kind == "duplicates":
            return "/gallery/duplicates/"
        return "/gallery/search/?q=" + QUERIES[n % len(QUERIES)].replace(" ", "+")

    latencies: dict[str, list[float]] = {kind: [] for kind in PAGES}
    trivial: dict[str, list[float]] = {kind: [] for kind in PAGES}
    errors: dict[str, list[str]] = {kind: [] for kind in PAGES}
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                requests.get(base + "/livez", timeout=5)
                break
            except requests.RequestException:
                time.sleep(0.3)
        warm = requests.Session()
        warm.cookies.set("sessionid", cookie)
        for kind in PAGES:  # first requests load the CLIP model and warm caches in both workers
            for n in range(4):
                warm.get(base + path_for(kind, n), timeout=300)
        per_client = {"grid": 25 if quick else 60, "image": 15 if quick else 30, "duplicates": 5 if quick else 10,
                      "semantic": 5 if quick else 10}
        lock = threading.Lock()

        def client(index: int, kind: str) -> None:
            session = requests.Session()
            session.cookies.set("sessionid", cookie)
            marker = PAGES[kind][1]
            for n in range(per_client[kind]):
                # Interleave both kinds so both see the same server load.
                pair = (("page", path_for(kind, n + index)), ("trivial", "/livez"))
                for which, path in pair if (n + index) % 2 else pair[::-1]:
                    start = time.perf_counter()
                    try:
                        response = session.get(base + path, timeout=120)
                        ok = response.status_code == 200 and (which == "trivial" or marker in response.text)
                    except requests.RequestException as exc:
                        ok, response = False, exc
                    elapsed = time.perf_counter() - start
                    with lock:
                        if ok:
                            (latencies if which == "page" else trivial)[kind].append(elapsed)
                        else:
                            errors[kind].append(f"{path}: {response}")

        for kind in PAGES:
            threads = [threading.Thread(target=client, args=(i, kind)) for i in range(16)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
    finally:
        server.terminate()
        server.wait(timeout=20)
    results = []
    for kind, (label, _) in PAGES.items():
        if not latencies[kind] or not trivial[kind]:
            results.append(Result("gallery", f"{label}, {images:,} images, 16 clients", float("nan"), float("nan"),
                                  "ms", float("nan"), "record", False, f"errors: {errors[kind][:3]}"))
            continue
        ours, base_p95 = p95(latencies[kind]) * 1000, p95(trivial[kind]) * 1000
        ratio = ours / base_p95
        target = "≤ 3× trivial" if kind in ("grid", "image") else "record"
        passed = (ratio <= 3 and not errors[kind]) if kind in ("grid", "image") else None
        notes = f"{len(latencies[kind])} requests, {len(errors[kind])} errors; ratio is ours/trivial (lower is better)"
        if kind == "semantic":
            notes += "; exact vector backend (this PostgreSQL has no pgvector), tiny CLIP (32-d) text encoder"
        if kind == "duplicates":
            notes += f"; {images // 100} planted near-duplicate pairs"
        results.append(Result("gallery", f"{label}, {images:,} images, 16 clients", ours, base_p95, "ms", ratio,
                              target, passed, notes))
    return results


def run(quick: bool = False) -> list[Result]:
    return bench_index(quick) + bench_grid(quick)

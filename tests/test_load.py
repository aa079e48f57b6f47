"""Load: fifty concurrent clients browse gallery, album and image pages on loopback while a training run
and a scrape run, against a real server. Zero errors; the p95 latency is recorded in test-artifacts/load.json.
Every loop is bounded in count and in time."""

from __future__ import annotations

import json
import random
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from bench.common import p95
from imagineer.testing import image_bytes
from tests.deployment import ROOT, Deployment, send_body

pytestmark = pytest.mark.slow

CLIENTS = 50
REQUESTS_PER_CLIENT = 16
TIME_LIMIT = 240.0


class _SlowSite(BaseHTTPRequestHandler):
    """Forty pages, each with one picture, served with a small delay: a scrape that lasts a while."""

    def do_GET(self):  # noqa: N802
        time.sleep(0.05)
        if self.path == "/robots.txt":
            body, kind = b"User-agent: *\nAllow: /\n", "text/plain"
        elif self.path.startswith("/p/") or self.path == "/":
            n = int(self.path.rsplit("/", 1)[-1] or 0) if self.path != "/" else 0
            links = "".join(f'<a href="/p/{m}">{m}</a>' for m in range(n + 1, min(n + 4, 40)))
            body, kind = f'<html><body>{links}<img src="/img/{n}.png" alt="picture {n}"></body></html>'.encode(), \
                "text/html"
        elif self.path.startswith("/img/"):
            body, kind = image_bytes("PNG", size=(200, 150), seed=1000 + int(self.path[5:-4])), "image/png"
        else:
            self.send_error(404)
            return
        send_body(self, body, kind)

    def log_message(self, *args):
        pass


@pytest.fixture
def site():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _SlowSite)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()


@pytest.fixture
def deployment(tmp_path, redis_server):
    deployment = Deployment(tmp_path, redis_url=redis_server.url,
                            extra_env={"IMAGINEER_SCRAPE_ALLOW_PRIVATE": "1"})
    deployment.prepare()
    deployment.manage("build_tiny_model", "--if-missing")
    deployment.create_user("loader", "a-Strong-pass-42", staff=False)
    pictures = tmp_path / "pictures"
    pictures.mkdir()
    for i in range(40):
        (pictures / f"{i}.png").write_bytes(image_bytes("PNG", size=(320, 240), seed=i))
    deployment.manage("index_images", str(pictures), "--owner", "loader", "--album", "Load", "--no-progress")
    deployment.start_web(workers=2, threads=8)
    deployment.start_worker("scrape-worker", ["scrape", "default"])
    deployment.start_worker("train-worker", ["train"], warm=True)
    yield deployment
    deployment.stop()


def _ids(deployment) -> tuple[list[int], int]:
    out = deployment.shell("from gallery.models import Image, Album\n"
                           "print(list(Image.objects.values_list('pk', flat=True)))\n"
                           "print(Album.objects.get(name='Load').pk)")
    lines = out.strip().splitlines()
    return json.loads(lines[-2]), int(lines[-1])


def _job_status(deployment, model: str) -> str:
    app, name = model.split(".")
    return deployment.shell(f"from {app}.models import {name}\n"
                            f"print({name}.objects.latest('pk').status)").strip().splitlines()[-1]


def test_fifty_clients_browse_without_errors_while_training_and_scraping(deployment, site):
    image_ids, album_id = _ids(deployment)
    deployment.manage("train_lora", "--album", "Load", "--owner", "loader", "--steps", "400", "--resolution", "64",
                      "--batch-size", "2", "--checkpoint-every", "100")
    deployment.manage("scrape", site, "--album", "Scraped", "--owner", "loader", "--max-pages", "40")
    session = deployment.login("loader", "a-Strong-pass-42")
    cookies = session.cookies.get_dict()
    # Let both jobs get going before the load starts.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and _job_status(deployment, "training.TrainingRun") != "running":
        time.sleep(1)

    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    started = time.monotonic()

    def client(index: int) -> None:
        rng = random.Random(index)
        http = requests.Session()
        http.cookies.update(cookies)
        for _ in range(REQUESTS_PER_CLIENT):
            if time.monotonic() - started > TIME_LIMIT:
                break
            path = rng.choice(["/gallery/", "/gallery/mine/", f"/gallery/albums/{album_id}/",
                               f"/gallery/images/{rng.choice(image_ids)}/", "/gallery/albums/"])
            begin = time.perf_counter()
            try:
                response = http.get(deployment.url + path, timeout=60)
                ok = response.status_code == 200
                detail = f"{path}: {response.status_code}"
            except requests.RequestException as exc:
                ok, detail = False, f"{path}: {exc}"
            elapsed = time.perf_counter() - begin
            with lock:
                latencies.append(elapsed)
                if not ok:
                    errors.append(detail)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=TIME_LIMIT + 60)
    duration = time.monotonic() - started
    training = _job_status(deployment, "training.TrainingRun")
    scrape = _job_status(deployment, "scraping.ScrapeJob")
    report = {
        "clients": CLIENTS, "requests": len(latencies), "errors": len(errors), "seconds": round(duration, 1),
        "p50_ms": round(sorted(latencies)[len(latencies) // 2] * 1000, 1) if latencies else None,
        "p95_ms": round(p95(latencies) * 1000, 1) if latencies else None,
        "max_ms": round(max(latencies) * 1000, 1) if latencies else None,
        "training_status_after": training, "scrape_status_after": scrape,
    }
    artifacts = ROOT / "test-artifacts"
    artifacts.mkdir(exist_ok=True)
    (artifacts / "load.json").write_text(json.dumps(report, indent=2))
    print("load:", report)
    assert errors == [], errors[:10]
    assert len(latencies) == CLIENTS * REQUESTS_PER_CLIENT
    # The background work really ran alongside (and was not broken by) the load.
    assert training in ("running", "succeeded"), deployment.log("train-worker")[-3000:]
    assert scrape in ("running", "succeeded"), deployment.log("scrape-worker")[-3000:]

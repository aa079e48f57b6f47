"""Scraping benchmark.

A local site of 2,000 pages (one distinct JPEG on each, a tree of links plus links back up) served by a
separate process on 127.0.0.1. In the same run, alternating, best of the rounds:

- ours: a real scrape job (``scraping.jobs.run_scrape_job``, inline): the crawl subprocess with every
  safety check, the event stream, ScrapedItem rows, and each image imported into the gallery;
- baseline: a bare Scrapy spider (follow links, save each image's bytes) with the same Scrapy settings
  (concurrency, delay, AutoThrottle, robots.txt, timeouts, size cap, breadth-first order).

Both are timed from start to end as a user sees them (process start included). Target: ours ≥ 0.8× the
bare spider's pages/s and images/s. Ours does strictly more work: the import (validation, perceptual
hash, thumbnails, rows) runs in the job process while the crawl process downloads, so it needs about two
free cores to keep pace; the notes give each side's CPU seconds so a loaded machine can be told apart.
"""

from __future__ import annotations

import io
import json
import multiprocessing
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, Result, free_port, setup_django

BRANCHING = 10
SETTINGS = {"concurrency": 16, "delay": 0.0, "autothrottle": False, "obey_robots": True,
            "download_timeout": 30.0, "retries": 1}


# -- the site (its own process, so serving does not share a GIL with either side) --------------------------

def _image(n: int) -> bytes:
    import random

    from PIL import Image

    rnd = random.Random(n)
    base = Image.linear_gradient("L").resize((96, 96)).convert("RGB")
    noise = Image.frombytes("RGB", (96, 96), rnd.randbytes(96 * 96 * 3))
    out = io.BytesIO()
    Image.blend(base, noise, 0.35).save(out, "JPEG", quality=85)
    return out.getvalue()


def _page(n: int, pages: int) -> bytes:
    links = [f'<a href="/p/{c}.html">page {c}</a>' for c in range(n * BRANCHING + 1, n * BRANCHING + BRANCHING + 1)
             if c < pages]
    if n:
        links.append(f'<a href="/p/{(n - 1) // BRANCHING}.html">up</a> <a href="/p/0.html">home</a>')
    return (f"<!doctype html><html><head><title>Page {n}</title></head><body><h1>Page {n}</h1>"
            f'<img src="/img/{n}.jpg" alt="Picture {n}" title="Title {n}">{" ".join(links)}</body></html>').encode()


def _serve(port: int, pages: int, ready) -> None:
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    images = [_image(n) for n in range(pages)]

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802
            path = self.path.split("?", 1)[0]
            status, ctype, body = 404, "text/plain", b"not found"
            if path == "/robots.txt":
                status, ctype, body = 200, "text/plain", b"User-agent: *\nDisallow: /private/\n"
            elif path.startswith("/p/") and path.endswith(".html") and path[3:-5].isdigit():
                n = int(path[3:-5])
                if n < pages:
                    status, ctype, body = 200, "text/html; charset=utf-8", _page(n, pages)
            elif path.startswith("/img/") and path.endswith(".jpg") and path[5:-4].isdigit():
                n = int(path[5:-4])
                if n < pages:
                    status, ctype, body = 200, "image/jpeg", images[n]
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    ready.set()
    server.serve_forever()


def start_site(pages: int) -> tuple[multiprocessing.Process, str]:
    port = free_port()
    ready = multiprocessing.Event()
    proc = multiprocessing.Process(target=_serve, args=(port, pages, ready), daemon=True)
    proc.start()
    if not ready.wait(60):
        raise RuntimeError("the bench site did not start")
    return proc, f"http://127.0.0.1:{port}"


def depth_for(pages: int) -> int:
    depth, reach = 0, 1
    while reach < pages:
        depth += 1
        reach = reach * BRANCHING + 1
    return depth + 1


# -- the baseline: a bare Scrapy spider --------------------------------------------------------------------

def bare_spider(config_path: str) -> None:
    """Run in a subprocess: crawl, save every image, print {"pages": n, "images": n} as the last line."""
    import hashlib

    import scrapy
    from scrapy.crawler import CrawlerProcess

    cfg = json.loads(Path(config_path).read_text())
    out_dir = Path(cfg["out_dir"])
    out_dir.mkdir(parents=True, exist_ok=True)
    counts = {"pages": 0, "images": 0}

    class BareSpider(scrapy.Spider):
        name = "bare"
        allowed_domains = ["127.0.0.1"]

        async def start(self):
            yield scrapy.Request(cfg["start_url"], callback=self.parse)

        def parse(self, response):
            counts["pages"] += 1
            for src in response.css("img::attr(src)").getall():
                yield response.follow(src, callback=self.save, priority=10)
            for href in response.css("a::attr(href)").getall():
                yield response.follow(href, callback=self.parse)

        def save(self, response):
            body = response.body
            (out_dir / f"{hashlib.sha256(body).hexdigest()[:20]}.jpg").write_bytes(body)
            counts["images"] += 1

    process = CrawlerProcess({
        "TWISTED_REACTOR": "twisted.internet.asyncioreactor.AsyncioSelectorReactor",
        "USER_AGENT": cfg["user_agent"],
        "ROBOTSTXT_OBEY": cfg["obey_robots"],
        "DEPTH_LIMIT": cfg["depth"] + 1,
        "DEPTH_PRIORITY": 1,
        "SCHEDULER_DISK_QUEUE": "scrapy.squeues.PickleFifoDiskQueue",
        "SCHEDULER_MEMORY_QUEUE": "scrapy.squeues.FifoMemoryQueue",
        "DOWNLOAD_TIMEOUT": cfg["download_timeout"],
        "DOWNLOAD_MAXSIZE": cfg["max_response_bytes"],
        "DOWNLOAD_DELAY": cfg["delay"],
        "AUTOTHROTTLE_ENABLED": cfg["autothrottle"],
        "CONCURRENT_REQUESTS": cfg["concurrency"],
        "CONCURRENT_REQUESTS_PER_DOMAIN": cfg["concurrency"],
        "RETRY_TIMES": cfg["retries"],
        "COOKIES_ENABLED": False,
        "TELNETCONSOLE_ENABLED": False,
        "LOG_LEVEL": "INFO",
        "LOG_FILE": str(out_dir / "crawl.log"),
    })
    process.crawl(BareSpider)
    process.start()
    print(json.dumps(counts))


def run_bare(site: str, pages: int, work: Path) -> tuple[float, dict]:
    from django.conf import settings

    out_dir = work / f"bare-{time.monotonic_ns()}"
    config = {"start_url": f"{site}/p/0.html", "out_dir": str(out_dir), "depth": depth_for(pages),
              "user_agent": settings.SCRAPE_USER_AGENT, "max_response_bytes": settings.SCRAPE_MAX_RESPONSE_BYTES,
              **SETTINGS}
    config_path = work / "bare.json"
    config_path.write_text(json.dumps(config))
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--bare-spider", str(config_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=1800, check=True)
    seconds = time.perf_counter() - started
    counts = json.loads(proc.stdout.strip().splitlines()[-1])
    shutil.rmtree(out_dir, ignore_errors=True)
    return seconds, counts


# -- ours: a scrape job ------------------------------------------------------------------------------------

def run_job(site: str, pages: int, owner) -> tuple[float, dict]:
    from scraping.jobs import run_scrape_job
    from scraping.models import ScrapeJob
    from scraping.services import scrape_job_start

    job = scrape_job_start(user=owner, start_url=f"{site}/p/0.html", album_name=f"bench {owner.username}",
                           enqueue=False, depth=depth_for(pages), max_pages=pages + 10, max_images=pages + 10,
                           min_width=0, min_height=0, min_bytes=0, concurrency=SETTINGS["concurrency"],
                           delay=SETTINGS["delay"], autothrottle=SETTINGS["autothrottle"],
                           obey_robots=SETTINGS["obey_robots"], download_timeout=SETTINGS["download_timeout"])
    started = time.perf_counter()
    run_scrape_job(job.pk)
    seconds = time.perf_counter() - started
    job = ScrapeJob.objects.get(pk=job.pk)
    if job.status != "succeeded":
        raise RuntimeError(f"the scrape job ended {job.status}: {job.error}")
    return seconds, dict(job.counters)


def cpu_seconds() -> tuple[float, float]:
    """CPU seconds used so far by this process and by its finished children (the crawl processes)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime, children.ru_utime + children.ru_stime


def run(quick: bool = False) -> list[Result]:
    pages = 300 if quick else 2000
    os.environ.setdefault("IMAGINEER_SCRAPE_ALLOW_PRIVATE", "1")  # the site is on 127.0.0.1
    data_dir = setup_django()
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.test.utils import override_settings

    call_command("migrate", verbosity=0)
    work = Path(tempfile.mkdtemp(prefix="bench-scrape-"))
    site_proc, site = start_site(pages)
    storage = {"BACKEND": "django.core.files.storage.FileSystemStorage",
               "OPTIONS": {"location": data_dir / "media"}}
    # The job uploads its crawl log to the artifacts storage as it goes (scraping.jobs): kept on local disk
    # here, beside the media, like a one-machine install.
    artifacts = {"BACKEND": "django.core.files.storage.FileSystemStorage",
                 "OPTIONS": {"location": data_dir / "artifacts", "allow_overwrite": True}}
    static = {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}
    rounds = 1 if quick else 3
    best = {"ours": (float("inf"), {}), "bare": (float("inf"), {})}
    cpu = {"bare": float("inf"), "ours crawl": float("inf"), "ours import": float("inf")}
    try:
        with override_settings(SCRAPE_ALLOW_PRIVATE=True, STORAGES={"default": storage, "artifacts": artifacts,
                                                                 "staticfiles": static},
                               WORK_DIR=work / "work", LOG_DIR=work / "logs"):
            for round_no in range(rounds):
                before = cpu_seconds()
                bare = run_bare(site, pages, work)
                middle = cpu_seconds()
                owner = get_user_model().objects.create_user(f"bench{round_no}", f"b{round_no}@example.com", "x")
                ours = run_job(site, pages, owner)
                after = cpu_seconds()
                cpu["bare"] = min(cpu["bare"], middle[1] - before[1])
                cpu["ours crawl"] = min(cpu["ours crawl"], after[1] - middle[1])
                cpu["ours import"] = min(cpu["ours import"], after[0] - middle[0])
                for name, (seconds, counts) in (("bare", bare), ("ours", ours)):
                    if seconds < best[name][0]:
                        best[name] = (seconds, counts)
                print(f"   round {round_no + 1}: bare {bare[0]:.1f}s {bare[1]}, ours {ours[0]:.1f}s {ours[1]}",
                      flush=True)
    finally:
        site_proc.terminate()
        site_proc.join(10)
        shutil.rmtree(work, ignore_errors=True)
    (ours_s, ours_c), (bare_s, bare_c) = best["ours"], best["bare"]
    ours_pages, bare_pages = ours_c["pages"] / ours_s, bare_c["pages"] / bare_s
    ours_images, bare_images = ours_c["imported"] / ours_s, bare_c["images"] / bare_s
    complete = ours_c["pages"] == bare_c["pages"] == pages and ours_c["imported"] == bare_c["images"] == pages
    notes = (f"{pages} pages, {pages} JPEGs (96×96); concurrency {SETTINGS['concurrency']}, no delay; "
             f"ours imports every image into the gallery (ScrapedItem rows, album); "
             f"ours {ours_s:.1f}s, bare {bare_s:.1f}s; CPU s: bare {cpu['bare']:.1f}, ours crawl process "
             f"{cpu['ours crawl']:.1f} + import (job process) {cpu['ours import']:.1f} on {os.cpu_count()} cores; "
             f"{settings.DATABASES['default']['ENGINE'].rsplit('.', 1)[-1]}"
             + ("" if complete else f"; INCOMPLETE: ours {ours_c}, bare {bare_c}"))
    return [
        Result("scraping", "scrape job vs bare Scrapy spider: pages/s", ours_pages, bare_pages, "pages/s",
               ours_pages / bare_pages, "≥ 0.8", complete and ours_pages / bare_pages >= 0.8, notes),
        Result("scraping", "scrape job vs bare Scrapy spider: images/s", ours_images, bare_images, "images/s",
               ours_images / bare_images, "≥ 0.8", complete and ours_images / bare_images >= 0.8,
               "images/s: ours counts images imported into the gallery, bare counts files saved"),
    ]


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--bare-spider":
        bare_spider(sys.argv[2])
    else:
        for result in run(quick="--quick" in sys.argv):
            print(result)

"""A worker killed with SIGKILL in the middle of a job, in a real deployment (no web server needed: a real
`manage.py rqworker` over a private Redis, with its own data dir and database).

Mid-scrape: the job ends failed, the images it had imported stay, no media file is orphaned and the
crawl's work dir goes. Mid-labeling (claude-docker): the job ends failed, the batch's container does
not outlive its worker and no label is half-written. (Mid-training resume: training/tests/test_runs_kill.py.)

The kill takes the worker's whole family: RQ's work horse runs in a process group of its own and the
crawl subprocess in a session of its own, so each group is killed, as a power cut or the OOM killer would.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from imagineer.testing import image_bytes
from tests.deployment import Deployment

pytestmark = pytest.mark.slow

STALE_AFTER = 5  # IMAGINEER_JOB_STALE_AFTER for these deployments (the minimum)
PASSWORD = "a-Strong-pass-42"  # noqa: S105


# -- killing a worker and everything it started ------------------------------------------------------------

def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state, parent pid) of a live process, None once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()  # the command name may hold spaces and parentheses
    return fields[0], int(fields[1])


def _alive(pid: int) -> bool:
    stat = _proc_stat(pid)
    return stat is not None and stat[0] not in ("Z", "X")


def _descendants(pid: int) -> list[int]:
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := _proc_stat(int(entry.name))) is not None:
            parents[int(entry.name)] = stat[1]
    found, frontier = [], [pid]
    while frontier:
        children = [child for child, parent in parents.items() if parent in frontier]
        found += children
        frontier = children
    return found


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def kill_worker(deployment: Deployment, name: str) -> dict[int, str]:
    """SIGKILL the worker's process group and the groups of all its descendants; return {pid: command line}."""
    family = {pid: _cmdline(pid) for pid in _descendants(deployment.procs[name].pid)}
    groups = set()
    for pid in family:
        try:
            groups.add(os.getpgid(pid))
        except ProcessLookupError:
            pass
    deployment.kill(name)
    for group in groups:
        try:
            os.killpg(group, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in family) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [pid for pid in family if _alive(pid)], family
    return family


def wait_until_stale() -> None:
    # The heartbeat (every second) died with the work horse; after STALE_AFTER the reaper may fail the row.
    time.sleep(STALE_AFTER + 1.5)


def shell_json(deployment: Deployment, code: str):
    """Run `code` in the deployment's `manage.py shell`; its last output line is JSON."""
    return json.loads(deployment.shell(code).strip().splitlines()[-1])


# -- mid-scrape --------------------------------------------------------------------------------------------

class SlowSite:
    """Three pictures on the front page, and a link to a page that answers only when the test ends.

    (scraping/tests/site.py's front page needs the crawler's test DNS, which a deployment configured
    from its environment cannot have; this keeps the crawl on 127.0.0.1.)
    """

    PICTURES = 3

    def __init__(self) -> None:
        self.release = threading.Event()
        self.slow_page_requested = threading.Event()
        site = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                if self.path == "/":
                    pictures = "".join(f'<img src="/img/{i}.png" alt="picture {i}">' for i in range(site.PICTURES))
                    body, kind = f'<html><body><a href="/later.html">more</a>{pictures}</body></html>', "text/html"
                    body = body.encode()
                elif self.path.startswith("/img/") and self.path.endswith(".png"):
                    body, kind = image_bytes("PNG", size=(96, 72), seed=int(self.path[5:-4]) + 40), "image/png"
                elif self.path == "/later.html":
                    site.slow_page_requested.set()
                    site.release.wait(60)
                    body, kind = b"<html><body>too late</body></html>", "text/html"
                elif self.path == "/robots.txt":
                    body, kind = b"User-agent: *\nAllow: /\n", "text/plain"
                else:
                    self.send_error(404)
                    return
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", kind)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):  # the crawler is gone
                    pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def slow_site():
    site = SlowSite()
    yield site
    site.stop()


@pytest.fixture
def scrape_deployment(tmp_path, redis_server):
    deployment = Deployment(tmp_path, redis_url=redis_server.url, extra_env={
        "IMAGINEER_SCRAPE_ALLOW_PRIVATE": "1", "IMAGINEER_JOB_STALE_AFTER": str(STALE_AFTER),
    })
    deployment.manage("migrate", "--verbosity", "0")
    deployment.create_user("alice", PASSWORD)
    yield deployment
    deployment.stop()


def test_it_fails_a_scrape_whose_worker_is_killed_and_keeps_what_it_imported(scrape_deployment, slow_site):
    deployment = scrape_deployment
    deployment.start_worker("scrape-worker", ["scrape"])
    job_id = shell_json(deployment, (
        "import json\n"
        "from django.contrib.auth import get_user_model\n"
        "from scraping.services import scrape_job_start\n"
        "job = scrape_job_start(user=get_user_model().objects.get(username='alice'), "
        f"start_url={slow_site.url!r}, album_name='Killed', delay=0.0, autothrottle=False, min_width=0, "
        "min_height=0, min_bytes=0, download_timeout=60.0, concurrency=4)\n"
        "print(json.dumps(job.pk))"
    ))
    # Wait until every picture is imported and the crawl hangs on the slow page.
    imported = shell_json(deployment, (
        "import json, time\n"
        "from gallery.models import Image\n"
        "from scraping.models import ScrapeJob\n"
        "deadline = time.monotonic() + 40\n"
        "while time.monotonic() < deadline:\n"
        "    n = Image.objects.filter(source='scrape').count()\n"
        f"    if n >= {SlowSite.PICTURES} or ScrapeJob.objects.get(pk={job_id}).is_finished:\n"
        "        break\n"
        "    time.sleep(0.1)\n"
        "print(json.dumps(sorted(Image.objects.filter(source='scrape').values_list('pk', flat=True))))"
    ))
    assert len(imported) == SlowSite.PICTURES, deployment.log("scrape-worker")[-3000:]
    assert slow_site.slow_page_requested.wait(20)
    work_dirs = list((deployment.data_dir / "work" / "scrapes").glob(f"job-{job_id}-*"))
    assert len(work_dirs) == 1

    family = kill_worker(deployment, "scrape-worker")
    assert any("scraping.crawler.run" in command for command in family.values()), family
    # The dead worker could not clean up after itself.
    assert work_dirs[0].is_dir()

    wait_until_stale()
    reaped = deployment.manage("reap_jobs").stdout
    assert "reaped: 1 failed" in reaped, reaped

    state = shell_json(deployment, (
        "import json\n"
        "from django.core.files.storage import default_storage as s\n"
        "from gallery.models import Image\n"
        "from scraping.models import ScrapeJob\n"
        f"job = ScrapeJob.objects.get(pk={job_id})\n"
        "images = [{'pk': i.pk, 'files': [bool(n) and s.exists(n) for n in (i.file.name, i.thumbnail.name, "
        "i.preview.name)], 'url': i.source_url} for i in Image.objects.filter(source='scrape').order_by('pk')]\n"
        "print(json.dumps({'status': job.status, 'error': job.error, 'images': images}))"
    ))
    assert state["status"] in ("failed", "cancelled")
    assert "worker running this job stopped responding" in state["error"]
    assert [image["pk"] for image in state["images"]] == imported
    assert all(all(image["files"]) for image in state["images"]), state["images"]
    assert sorted(image["url"] for image in state["images"]) == [
        f"{slow_site.url}img/{i}.png" for i in range(SlowSite.PICTURES)]

    storage = deployment.manage("check_storage").stdout
    assert "orphan files 0, missing originals 0, missing thumbnails 0" in storage, storage
    assert not work_dirs[0].exists()


# -- mid-labeling ------------------------------------------------------------------------------------------

@pytest.fixture
def podman():
    from labeling.testing.image import import_test_image
    from labeling.testing.podman import podman_problem, start_podman_service

    problem = podman_problem()
    if problem:
        if os.environ.get("CI"):
            pytest.fail(f"CI is set, so the container tests must run, but {problem}", pytrace=False)
        pytest.skip(f"container tests skipped: {problem}")
    service = start_podman_service()
    client = service.client()
    image = import_test_image(client)
    yield service, client, image.tags[0]
    client.close()
    service.stop()


def labeler_containers(client) -> list:
    from labeling.backends.container import CONTAINER_LABEL

    return client.containers.list(all=True, filters={"label": CONTAINER_LABEL})


@pytest.fixture
def label_deployment(tmp_path, redis_server, podman):
    service, _client, image_tag = podman
    credentials = tmp_path / "claude"
    credentials.mkdir()
    (credentials / ".credentials.json").write_text('{"claudeAiOauth": {"accessToken": "kill-test"}}')
    (credentials / ".credentials.json").chmod(0o644)
    deployment = Deployment(tmp_path, redis_url=redis_server.url, extra_env={
        "DOCKER_HOST": service.base_url, "IMAGINEER_LABEL_IMAGE": image_tag, "IMAGINEER_LABEL_NETWORK": "none",
        "IMAGINEER_CLAUDE_CREDENTIALS": str(credentials), "IMAGINEER_JOB_STALE_AFTER": str(STALE_AFTER),
        # The stand-in CLI sleeps for an hour: the batch is still running when the worker dies.
        "IMAGINEER_LABEL_ENV": "FAKE_CLAUDE_MODE=sleep",
    })
    deployment.manage("migrate", "--verbosity", "0")
    deployment.create_user("alice", PASSWORD)
    yield deployment
    deployment.stop()


@pytest.mark.containers
def test_it_leaves_no_labeler_container_behind_a_killed_worker(label_deployment, podman):
    deployment = label_deployment
    _service, client, _image = podman
    deployment.start_worker("label-worker", ["label"])
    job_id = shell_json(deployment, (
        "import json\n"
        "from django.contrib.auth import get_user_model\n"
        "from gallery.services import album_add_images, album_create, image_ingest\n"
        "from imagineer.testing import image_bytes\n"
        "from labeling.services import labeling_job_start\n"
        "alice = get_user_model().objects.get(username='alice')\n"
        "album = album_create(owner=alice, name='Boxed')\n"
        "images = [image_ingest(owner=alice, data=image_bytes('PNG', seed=s), filename=f'{s}.png').image "
        "for s in range(3)]\n"
        "album_add_images(album=album, images=images)\n"
        "print(json.dumps(labeling_job_start(user=alice, backend='claude-docker', album=album).pk))"
    ))

    deadline = time.monotonic() + 40
    while not [c for c in labeler_containers(client) if c.status == "running"]:
        assert time.monotonic() < deadline, deployment.log("label-worker")[-3000:]
        time.sleep(0.1)

    kill_worker(deployment, "label-worker")
    # Nobody is left to remove it: the container outlives its worker until the reaper runs.
    assert len(labeler_containers(client)) == 1

    wait_until_stale()
    reaped = deployment.manage("reap_jobs").stdout
    assert "reaped: 1 failed" in reaped, reaped
    assert labeler_containers(client) == []

    state = shell_json(deployment, (
        "import json\n"
        "from labeling.models import Label, LabelingJob\n"
        f"job = LabelingJob.objects.get(pk={job_id})\n"
        "print(json.dumps({'status': job.status, 'error': job.error, 'counters': job.counters, "
        "'labels': Label.objects.count()}))"
    ))
    assert state["status"] == "failed"
    assert "worker running this job stopped responding" in state["error"]
    assert state["labels"] == 0 and state["counters"].get("labelled", 0) == 0

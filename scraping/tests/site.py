"""The test website: a threaded HTTP server on 127.0.0.1 serving pages, images and traps for the crawler.

The site is data (``PAGES``, ``IMAGES``, ``REDIRECTS``, ``ROBOTS_DISALLOW``): the HTML is rendered from it
and ``TestSite.expected()`` walks the same data breadth-first, so the tests assert exact numbers that
follow from the site's definition rather than from the crawler's output.

Hostnames other than 127.0.0.1 only exist through the crawl's ``host_overrides`` (``HOST_OVERRIDES``):
the crawler never asks real DNS about them and refuses the private ones before any connection.
"""

from __future__ import annotations

import hashlib
import io
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from PIL import Image

# Test names for the overrides; the private ones are never contacted.
HOST_OVERRIDES = {
    "private.test": "10.0.0.1",
    "metadata.test": "169.254.169.254",
    "mapped.test": "::ffff:10.0.0.1",
    "multi.test": "127.0.0.1,10.0.0.1",  # one answer, two addresses: any bad one refuses
    "offsite.test": "127.0.0.1",
}

ROBOTS_DISALLOW = ("/private/",)
MIN_BYTES = 1000
MAX_RESPONSE_BYTES = 200_000
DOWNLOAD_TIMEOUT = 2.0
SLOW_SECONDS = 8.0


@dataclass
class ImageDef:
    """An image URL and what the crawler must report for it ("downloaded", "failed:<bucket>", "skipped:<why>")."""

    outcome: str
    make: str = ""  # how to build the bytes (see _build_image)
    status: int = 200
    content_type: str = ""
    same_as: str = ""  # serve the same bytes as another image
    slow: bool = False


@dataclass
class PageDef:
    links: list[str] = field(default_factory=list)
    # (src or srcset, alt, title, kind) where kind is "img", "srcset" or "link"
    images: list[tuple[str, str, str, str]] = field(default_factory=list)
    extra_html: str = ""


IMAGES: dict[str, ImageDef] = {
    "/img/photo.jpg": ImageDef("downloaded", "jpeg:320x240"),
    "/img/photo-copy.jpg": ImageDef("skipped:duplicate", same_as="/img/photo.jpg"),
    "/img/s-large.jpg": ImageDef("downloaded", "jpeg:400x300"),
    "/img/s-small.jpg": ImageDef("downloaded", "jpeg:100x75"),  # only in a srcset that prefers s-large
    "/img/a1.webp": ImageDef("downloaded", "webp:200x200"),
    "/img/b1.png": ImageDef("downloaded", "png:128x128"),
    "/img/anim.gif": ImageDef("downloaded", "gif:64x64"),
    "/img/linked.png": ImageDef("downloaded", "png:96x96"),
    "/img/c1.bmp": ImageDef("downloaded", "bmp:40x40"),
    "/img/deep.tiff": ImageDef("downloaded", "tiff:48x48"),
    "/img/deeper.png": ImageDef("downloaded", "png:90x90"),
    "/img/secret.png": ImageDef("downloaded", "png:70x70"),  # only on a robots-disallowed page
    "/img/final.png": ImageDef("downloaded", "png:110x110"),  # reached through the redirect chain
    "/img/small.png": ImageDef("skipped:too_small", "png:4x4solid"),
    "/img/broken.jpg": ImageDef("failed:invalid_image", "random:4000", content_type="image/jpeg"),
    "/img/missing.jpg": ImageDef("failed:http_404", status=404),
    "/img/huge.png": ImageDef("failed:too_large", "png:300x300noise"),
    "/img/slow.jpg": ImageDef("failed:timeout", "jpeg:50x50", slow=True),
    "/private/hidden.jpg": ImageDef("failed:robots", "jpeg:60x60"),
    # Only on /qa/polyglot.html (linked from nowhere): a PNG that decodes but carries a script in a text
    # chunk; the crawler saves it, the gallery refuses it.
    "/qa/polyglot.png": ImageDef("downloaded", "png:64x64script"),
    "/qa/plain.png": ImageDef("downloaded", "png:80x80"),
}

# path -> (status, location); a chain is followed hop by hop.
REDIRECTS: dict[str, tuple[int, str]] = {
    "/img/chain.jpg": (301, "/r/2"),
    "/r/2": (302, "/img/final.png"),
    "/moved": (301, "/gallery/c.html"),
    "/away": (302, "http://offsite.test:{port}/elsewhere.html"),  # a page redirecting off the site
    "/img/to-private": (302, "http://private.test:{port}/img/photo.jpg"),
    "/img/to-metadata": (302, "http://metadata.test/latest/meta-data/"),
    "/img/to-mapped": (302, "http://mapped.test:{port}/img/photo.jpg"),
    "/rebind/start": (302, "http://rebind.test:{port}/img/photo.jpg"),
}

# Image URLs whose outcome comes from the redirect or host rules rather than from IMAGES.
EXTERNAL_OUTCOMES: dict[str, str] = {
    "/img/chain.jpg": "downloaded",
    "/img/to-private": "failed:refused_unsafe",
    "/img/to-metadata": "failed:refused_unsafe",
    "/img/to-mapped": "failed:refused_unsafe",
    "http://multi.test:{port}/img/photo.jpg": "failed:refused_unsafe",
    "http://0x0a000001/img/x.jpg": "failed:refused_unsafe",  # 10.0.0.1 spelled in hex
    "http://169.254.169.254/latest/meta-data/": "failed:refused_unsafe",
    "http://nowhere.test/img/x.jpg": "failed:dns",  # in no override: no lookup at all
}

PAGES: dict[str, PageDef] = {
    "/": PageDef(
        links=[
            "/gallery/a.html",
            "/gallery/b.html",
            "/private/secret.html",
            "/trap/1",
            "/moved",
            "/away",
            "/gallery/missing.html",
            "/files/doc.pdf",
            "http://offsite.test:{port}/elsewhere.html",
            "mailto:someone@example.com",
            "javascript:alert(1)",
            "#top",
        ],
        images=[
            ("/img/photo.jpg", "A photo", "Photo title", "img"),
            ("/img/s-small.jpg 320w, /img/s-large.jpg 1024w", "Responsive", "", "srcset"),
            ("/img/small.png", "tiny", "", "img"),
            ("/img/broken.jpg", "", "", "img"),
            ("/img/missing.jpg", "", "", "img"),
            ("/img/chain.jpg", "Chained", "", "img"),
            ("/img/huge.png", "", "", "img"),
            ("/img/slow.jpg", "", "", "img"),
            ("/private/hidden.jpg", "", "", "img"),
            ("/img/to-private", "", "", "img"),
            ("/img/to-metadata", "", "", "img"),
            ("/img/to-mapped", "", "", "img"),
            ("http://multi.test:{port}/img/photo.jpg", "", "", "img"),
            ("http://0x0a000001/img/x.jpg", "", "", "img"),
            ("http://169.254.169.254/latest/meta-data/", "", "", "img"),
            ("http://nowhere.test/img/x.jpg", "", "", "img"),
            ("/img/linked.png", "", "Linked image", "link"),
        ],
        extra_html=(
            '<img src="data:image/png;base64,iVBORw0KGgo=" alt="inline"><img src="file:///etc/passwd" alt="local file">'
        ),
    ),
    "/gallery/a.html": PageDef(
        links=["/gallery/b.html", "/gallery/deep.html", "/"],
        images=[("/img/a1.webp", "A one", "", "img"), ("/img/photo.jpg", "again", "", "img")],
    ),
    "/gallery/b.html": PageDef(
        images=[
            ("/img/b1.png", "B one", "", "img"),
            ("/img/anim.gif", "Animated", "", "img"),
            ("/img/photo-copy.jpg", "Copy", "", "img"),
        ],
    ),
    "/gallery/c.html": PageDef(images=[("/img/c1.bmp", "C one", "", "img")]),
    "/gallery/deep.html": PageDef(links=["/gallery/deeper.html"], images=[("/img/deep.tiff", "", "", "img")]),
    "/gallery/deeper.html": PageDef(images=[("/img/deeper.png", "", "", "img")]),
    "/private/secret.html": PageDef(images=[("/img/secret.png", "", "", "img")]),
    "/qa/polyglot.html": PageDef(
        images=[("/qa/polyglot.png", "Polyglot", "", "img"), ("/qa/plain.png", "Plain", "", "img")]
    ),
}

TRAP_PREFIX = "/trap/"


def trap_page(path: str) -> PageDef | None:
    """/trap/N links to /trap/N+1, forever."""
    tail = path[len(TRAP_PREFIX) :]
    if not path.startswith(TRAP_PREFIX) or not tail.isdigit():
        return None
    return PageDef(links=[f"{TRAP_PREFIX}{int(tail) + 1}"])


def _build_image(spec: str, seed: int) -> bytes:
    rnd = random.Random(seed)
    kind, _, size = spec.partition(":")
    if kind == "random":
        return rnd.randbytes(int(size))
    noise = size.endswith("noise")
    solid = size.endswith("solid")
    script = size.endswith("script")
    w, h = (int(v) for v in size.removesuffix("noise").removesuffix("solid").removesuffix("script").split("x"))
    if noise:
        im = Image.frombytes("RGB", (w, h), rnd.randbytes(w * h * 3))
    elif solid:
        im = Image.new("RGB", (w, h), (200, 30, 30))
    else:
        # A gradient plus some noise: every image distinct, and comfortably above MIN_BYTES.
        im = Image.linear_gradient("L").resize((w, h)).convert("RGB")
        speckle = Image.frombytes("RGB", (w, h), rnd.randbytes(w * h * 3))
        im = Image.blend(im, speckle, 0.3)
    out = io.BytesIO()
    if kind == "jpeg":
        im.save(out, "JPEG", quality=85)
    elif kind == "png" and script:
        from PIL import PngImagePlugin

        info = PngImagePlugin.PngInfo()
        info.add_text("Comment", "<script>alert(1)</script>")
        im.save(out, "PNG", pnginfo=info)
    elif kind == "png":
        im.save(out, "PNG")
    elif kind == "webp":
        im.save(out, "WEBP", quality=80)
    elif kind == "gif":
        frames = [im.convert("P"), im.rotate(90).convert("P")]
        frames[0].save(out, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    elif kind == "bmp":
        im.save(out, "BMP")
    elif kind == "tiff":
        im.save(out, "TIFF")
    else:  # pragma: no cover
        raise ValueError(spec)
    return out.getvalue()


_CONTENT_TYPES = {
    "jpeg": "image/jpeg",
    "png": "image/png",
    "webp": "image/webp",
    "gif": "image/gif",
    "bmp": "image/bmp",
    "tiff": "image/tiff",
}


@dataclass
class Expected:
    pages: list[str]  # paths of pages fetched successfully (after redirects), in BFS order
    page_failures: dict[str, str]  # requested path -> bucket
    images: dict[str, str]  # absolute image URL -> outcome

    def image_counts(self) -> Counter:
        return Counter(self.images.values())

    @property
    def downloaded(self) -> int:
        return sum(1 for o in self.images.values() if o == "downloaded")


class TestSite:
    __test__ = False  # not a pytest class

    def __init__(self) -> None:
        self.bodies: dict[str, bytes] = {}
        for i, (path, spec) in enumerate(sorted(IMAGES.items())):
            if spec.make:
                self.bodies[path] = _build_image(spec.make, seed=i)
        for path, spec in IMAGES.items():
            if spec.same_as:
                self.bodies[path] = self.bodies[spec.same_as]
        self.requests: list[tuple[str, str, str]] = []  # (method, host header, path)
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.base = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.server.serve_forever, name="test-site", daemon=True)

    # -- lifecycle ------------------------------------------------------------------------------------

    def start(self) -> TestSite:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self.server.shutdown()
        self.server.server_close()

    def url(self, path: str) -> str:
        path = path.replace("{port}", str(self.port))
        return path if "://" in path else self.base + path

    def sha256(self, path: str) -> str:
        return hashlib.sha256(self.bodies[path]).hexdigest()

    def requested_paths(self) -> list[str]:
        with self._lock:
            return [path for _m, _h, path in self.requests]

    def clear_log(self) -> None:
        with self._lock:
            self.requests.clear()

    # -- expectations ---------------------------------------------------------------------------------

    def page(self, path: str) -> PageDef | None:
        return PAGES.get(path) or trap_page(path)

    def expected(self, *, start: str = "/", depth: int, max_pages: int = 10_000) -> Expected:
        """What a crawl from ``start`` with these limits must report (robots obeyed, overrides on)."""
        pages: list[str] = []
        failures: dict[str, str] = {}
        images: dict[str, str] = {}
        queue: list[tuple[str, int]] = [(start, 0)]
        seen = {start}
        scheduled = 1
        while queue:
            path, level = queue.pop(0)
            final = path
            while final in REDIRECTS:
                final = REDIRECTS[final][1]
            if "://" in final:
                failures[path] = "offsite"
                continue
            if any(final.startswith(p) or path.startswith(p) for p in ROBOTS_DISALLOW):
                failures[path] = "robots"
                continue
            page = self.page(final)
            if page is None:
                failures[path] = "http_404"
                continue
            pages.append(final)
            for src, _alt, _title, kind in page.images:
                ref = src.split(",")[-1].split()[0] if kind == "srcset" else src
                url = self.url(ref)
                if url not in images:
                    images[url] = self._image_outcome(ref)
            for link in page.links:
                if not link.startswith("/") or link.endswith(".pdf"):
                    continue  # other hosts, other schemes, fragments, non-pages
                if link in seen:
                    continue
                if level >= depth or scheduled >= max_pages:
                    continue
                seen.add(link)
                scheduled += 1
                queue.append((link, level + 1))
        return Expected(pages, failures, images)

    def _image_outcome(self, ref: str) -> str:
        if ref in EXTERNAL_OUTCOMES:
            return EXTERNAL_OUTCOMES[ref]
        return IMAGES[ref].outcome

    # -- HTTP -----------------------------------------------------------------------------------------

    def render(self, path: str, page: PageDef) -> bytes:
        parts = ["<!doctype html><html><head><title>", path, "</title></head><body>"]
        for link in page.links:
            parts.append(f'<a href="{self.url(link) if "{port}" in link else link}">{link}</a> ')
        for src, alt, title, kind in page.images:
            src = src.replace("{port}", str(self.port))
            if kind == "srcset":
                fallback = src.split(",")[0].split()[0]
                parts.append(f'<img src="{fallback}" srcset="{src}" alt="{alt}">')
            elif kind == "link":
                parts.append(f'<a href="{src}" title="{title}">see the picture</a>')
            else:
                title_attr = f' title="{title}"' if title else ""
                parts.append(f'<img src="{src}" alt="{alt}"{title_attr}>')
        parts.append(page.extra_html)
        parts.append("</body></html>")
        return "".join(parts).encode()

    def _handler_class(self):
        site = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def log_message(self, *args) -> None:  # keep test output quiet
                pass

            def do_GET(self) -> None:  # noqa: N802
                path = urlsplit(self.path).path
                with site._lock:
                    site.requests.append(("GET", self.headers.get("Host", ""), path))
                site._serve(self, path)

        return Handler

    def _send(self, handler, status: int, body: bytes, content_type: str, headers: dict | None = None) -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            handler.send_header(k, v)
        handler.end_headers()
        handler.wfile.write(body)

    def _serve(self, handler, path: str) -> None:
        try:
            if path == "/robots.txt":
                rules = "".join(f"Disallow: {p}\n" for p in ROBOTS_DISALLOW)
                self._send(handler, 200, f"User-agent: *\n{rules}".encode(), "text/plain")
            elif path in REDIRECTS:
                status, location = REDIRECTS[path]
                self._send(handler, status, b"", "text/html", {"Location": self.url(location)})
            elif path in IMAGES:
                spec = IMAGES[path]
                if spec.slow:
                    # Outlast the crawl's timeout, without holding the test run if the site is stopped.
                    self._stopping.wait(SLOW_SECONDS)
                if spec.status != 200:
                    self._send(handler, spec.status, b"not here", "text/plain")
                    return
                kind = (spec.make or IMAGES[spec.same_as].make).partition(":")[0]
                ctype = spec.content_type or _CONTENT_TYPES.get(kind, "application/octet-stream")
                self._send(handler, 200, self.bodies[path], ctype)
            elif (page := self.page(path)) is not None:
                self._send(handler, 200, self.render(path, page), "text/html; charset=utf-8")
            else:
                self._send(handler, 404, b"<html><body>not found</body></html>", "text/html")
        except (BrokenPipeError, ConnectionResetError):  # the crawler gave up (timeout, size limit)
            pass


def wait_for(predicate, timeout: float = 5.0, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()

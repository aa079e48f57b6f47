"""A second test website on 127.0.0.1: one page or image per opt-out signal, and licence markup.

``EXPECTED`` says, for each image path, whether a crawl that respects opt-outs must skip it as
"opted_out" (and which signal it must name) or download it. The home page links every page; the images
of ``/p/images.html`` carry their signals in their own response headers.
"""

from __future__ import annotations

import io
import json
import random
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from PIL import Image

POLICY_URL = "https://publisher.example/tdm-policy.json"
CC_BY_SA = "https://creativecommons.org/licenses/by-sa/4.0/"

TDMREP = [
    {"location": "/p/tdmrep/*", "tdm-reservation": 1, "tdm-policy": POLICY_URL},
    # The first rule that matches wins: ok.png is free although the next rule covers its folder.
    {"location": "/i/mixed/ok.png$", "tdm-reservation": 0},
    {"location": "/i/mixed/", "tdm-reservation": 1},
    {"location": "/i/reserved/", "tdm-reservation": 1},
]

# page path -> (response headers, extra <head> markup, image paths)
PAGES: dict[str, tuple[dict[str, str], str, list[str]]] = {
    "/p/clean.html": ({}, "", ["/i/clean.png"]),
    "/p/xrobots.html": ({"X-Robots-Tag": "noai"}, "", ["/i/on-xrobots-page.png"]),
    "/p/xrobots-noindex.html": ({"X-Robots-Tag": "noindex, nofollow"}, "", ["/i/on-noindex-page.png"]),
    "/p/xrobots-scoped.html": ({"X-Robots-Tag": "imagineerbot: noimageai"}, "", ["/i/on-scoped-page.png"]),
    "/p/xrobots-otherbot.html": ({"X-Robots-Tag": "otherbot: noai"}, "", ["/i/on-otherbot-page.png"]),
    "/p/meta-robots.html": ({}, '<meta name="robots" content="noimageai">', ["/i/on-meta-page.png"]),
    "/p/meta-bot.html": ({}, '<meta name="ImagineerBot" content="noimageindex">', ["/i/on-meta-bot-page.png"]),
    "/p/tdm-header.html": ({"tdm-reservation": "1"}, "", ["/i/on-tdm-header-page.png"]),
    "/p/tdm-policy.html": ({"tdm-policy": POLICY_URL}, "", ["/i/on-tdm-policy-page.png"]),
    "/p/tdm-free.html": ({"tdm-reservation": "0"}, "", ["/i/on-tdm-free-page.png"]),
    "/p/tdm-meta.html": ({}, '<meta name="tdm-reservation" content="1">', ["/i/on-tdm-meta-page.png"]),
    "/p/tdmrep/page.html": ({}, "", ["/i/on-tdmrep-page.png"]),
    "/p/licensed.html": (
        {},
        f'<link rel="license" href="{CC_BY_SA}">',
        ["/i/licensed.png"],
    ),
    "/p/images.html": (
        {},
        "",
        [
            "/i/xr-noai.png",
            "/i/xr-noimageindex.png",
            "/i/xr-scoped.png",
            "/i/xr-otherbot.png",
            "/i/tdm-res.png",
            "/i/tdm-res0.png",
            "/i/tdm-pol.png",
            "/i/reserved/x.png",
            "/i/mixed/ok.png",
            "/i/mixed/no.png",
        ],
    ),
}

IMAGE_HEADERS: dict[str, dict[str, str]] = {
    "/i/xr-noai.png": {"X-Robots-Tag": "noai"},
    "/i/xr-noimageindex.png": {"X-Robots-Tag": "noimageindex"},
    "/i/xr-scoped.png": {"X-Robots-Tag": "ImagineerBot: noimageai"},
    "/i/xr-otherbot.png": {"X-Robots-Tag": "otherbot: noai, noimageai"},
    "/i/tdm-res.png": {"tdm-reservation": "1"},
    "/i/tdm-res0.png": {"tdm-reservation": "0"},
    "/i/tdm-pol.png": {"tdm-policy": POLICY_URL},
}

# image path -> None (downloaded) or (signal, where) it is opted out by
EXPECTED: dict[str, tuple[str, str] | None] = {
    "/i/clean.png": None,
    "/i/on-xrobots-page.png": ("x-robots-tag", "page"),
    "/i/on-noindex-page.png": ("x-robots-tag", "page"),
    "/i/on-scoped-page.png": ("x-robots-tag", "page"),
    "/i/on-otherbot-page.png": None,
    "/i/on-meta-page.png": ("meta-robots", "page"),
    "/i/on-meta-bot-page.png": ("meta-robots", "page"),
    "/i/on-tdm-header-page.png": ("tdm-reservation", "page"),
    "/i/on-tdm-policy-page.png": ("tdm-policy", "page"),
    "/i/on-tdm-free-page.png": None,
    "/i/on-tdm-meta-page.png": ("meta-tdm-reservation", "page"),
    "/i/on-tdmrep-page.png": ("tdmrep.json", "page"),
    "/i/licensed.png": None,
    "/i/xr-noai.png": ("x-robots-tag", "image"),
    "/i/xr-noimageindex.png": ("x-robots-tag", "image"),
    "/i/xr-scoped.png": ("x-robots-tag", "image"),
    "/i/xr-otherbot.png": None,
    "/i/tdm-res.png": ("tdm-reservation", "image"),
    "/i/tdm-res0.png": None,
    "/i/tdm-pol.png": ("tdm-policy", "image"),
    "/i/reserved/x.png": ("tdmrep.json", "image"),
    "/i/mixed/ok.png": None,
    "/i/mixed/no.png": ("tdmrep.json", "image"),
}


def _png(seed: int) -> bytes:
    """A distinct 96×96 PNG per image (well above the scrape tests' 1000-byte minimum)."""
    raw = random.Random(seed).randbytes(96 * 96 * 3)  # noise: never compresses below the minimum
    im = Image.frombytes("RGB", (96, 96), raw)
    out = io.BytesIO()
    im.save(out, format="PNG")
    return out.getvalue()


class OptOutSite:
    __test__ = False

    def __init__(self) -> None:
        self.bodies = {path: _png(i) for i, path in enumerate(sorted(EXPECTED))}
        self.requests: list[str] = []
        self._lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.base = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.server.serve_forever, name="optout-site", daemon=True)

    def start(self) -> OptOutSite:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def url(self, path: str) -> str:
        return self.base + path

    def requested(self) -> list[str]:
        with self._lock:
            return list(self.requests)

    def page_html(self, path: str) -> bytes:
        if path == "/":
            links = "".join(f'<a href="{p}">{p}</a>' for p in PAGES)
            return f"<html><head><title>Home</title></head><body>{links}</body></html>".encode()
        _headers, head, images = PAGES[path]
        imgs = "".join(f'<img src="{i}" alt="{i.rsplit("/", 1)[-1]}">' for i in images)
        body = imgs
        if path == "/p/licensed.html":
            body += ('<p xmlns:cc="http://creativecommons.org/ns#">by <span property="cc:attributionName">'
                     f'Ada Example</span>, <a rel="license" href="{CC_BY_SA}">CC BY-SA 4.0</a></p>')
        return f"<html><head><title>{path}</title>{head}</head><body>{body}</body></html>".encode()

    def _handler(self):
        site = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                path = self.path.split("?", 1)[0]
                with site._lock:
                    site.requests.append(path)
                if path == "/.well-known/tdmrep.json":
                    self._send(200, json.dumps(TDMREP).encode(), "application/json")
                elif path == "/robots.txt":
                    self._send(200, b"User-agent: *\nDisallow: /blocked/\n", "text/plain")
                elif path == "/" or path in PAGES:
                    headers = {} if path == "/" else PAGES[path][0]
                    self._send(200, site.page_html(path), "text/html; charset=utf-8", headers)
                elif path in site.bodies:
                    self._send(200, site.bodies[path], "image/png", IMAGE_HEADERS.get(path, {}))
                else:
                    self._send(404, b"not found", "text/plain")

            def _send(self, status: int, body: bytes, content_type: str, headers: dict | None = None) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

        return Handler

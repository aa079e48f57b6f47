"""A stand-in for the Hugging Face hub on 127.0.0.1 (tests only): serves the files of one local folder as
repository `repo` through the endpoints huggingface_hub's snapshot_download uses (revision info, the
file tree, and HEAD/GET of each file under /resolve/)."""

from __future__ import annotations

import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

COMMIT = "0123456789abcdef0123456789abcdef01234567"


class StubHub:
    def __init__(self, repo: str, folder: Path):
        self.repo, self.folder = repo, folder
        self.requests: list[str] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def do_HEAD(self):  # noqa: N802
                self.do_GET()

            def do_GET(self):  # noqa: N802
                hub.requests.append(f"{self.command} {self.path}")
                files = {p.name: p.read_bytes() for p in sorted(hub.folder.iterdir()) if p.is_file()}
                path = self.path.split("?")[0]
                if path == f"/api/models/{hub.repo}/revision/main":
                    return self._send(200, json.dumps({"id": hub.repo, "sha": COMMIT, "siblings": [
                        {"rfilename": name} for name in files]}).encode(), "application/json")
                if path == f"/api/models/{hub.repo}/tree/{COMMIT}":
                    return self._send(200, json.dumps([
                        {"type": "file", "path": name, "size": len(data), "oid": hashlib.sha1(data).hexdigest()}  # noqa: S324
                        for name, data in files.items()]).encode(), "application/json")
                match = re.fullmatch(rf"/{re.escape(hub.repo)}/resolve/(?:{COMMIT}|main)/(.+)", path)
                if match and match.group(1) in files:
                    data = files[match.group(1)]
                    return self._send(200, data, "application/octet-stream",
                                      {"X-Repo-Commit": COMMIT, "ETag": f'"{hashlib.sha256(data).hexdigest()}"'})
                self._send(404, b'{"error": "not found"}', "application/json")

            def _send(self, code, body, kind, headers=None):
                self.send_response(code)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> StubHub:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

"""The real labeler image's Dockerfile agrees with what the claude-docker backend expects.

(It cannot be built in the tests: its base image comes from a registry.)"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from labeling.backends import container

CONTAINER_DIR = Path(__file__).resolve().parents[1] / "container"


def dockerfile() -> str:
    return (CONTAINER_DIR / "Dockerfile").read_text()


def test_the_claude_cli_is_pinned_to_an_exact_version():
    version = re.search(r"^ARG CLAUDE_CODE_VERSION=(\S+)$", dockerfile(), re.M)

    assert version and re.fullmatch(r"\d+\.\d+\.\d+", version.group(1))
    assert '"@anthropic-ai/claude-code@${CLAUDE_CODE_VERSION}"' in dockerfile()
    assert f'{container.VERSION_LABEL}="${{CLAUDE_CODE_VERSION}}"' in dockerfile()


def test_it_runs_as_the_unprivileged_user_the_backend_uses():
    text = dockerfile()

    assert f"USER {container.DEFAULT_USER}" in text
    assert f"HOME={container.CONTAINER_HOME}" in text
    assert 'ENTRYPOINT ["/usr/local/bin/labeler-entrypoint"]' in text
    assert f"WORKDIR {container.IMAGES_DIR}" in text


def test_the_entrypoint_copies_the_credentials_the_backend_mounts():
    entrypoint = CONTAINER_DIR / "entrypoint.sh"

    assert f"{container.CREDENTIALS_MOUNT}/{container.CREDENTIALS_FILE}" in entrypoint.read_text()
    subprocess.run(["sh", "-n", str(entrypoint)], check=True)

"""The real labeler image's Dockerfile agrees with what the claude-docker backend expects.

(It cannot be built in the tests: its base image comes from a registry.)"""

from __future__ import annotations

import json
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


def test_the_entrypoint_takes_the_credentials_the_backend_copies_in():
    entrypoint = CONTAINER_DIR / "entrypoint.sh"
    text = entrypoint.read_text()

    assert f"{container.CREDENTIALS_MOUNT}/{container.CREDENTIALS_FILE}" in text
    assert f"{container.CREDENTIALS_MOUNT}/{container.API_KEY_FILE}" in text and "export ANTHROPIC_API_KEY" in text
    subprocess.run(["sh", "-n", str(entrypoint)], check=True)


def test_the_image_limits_the_cli_to_reading_the_images_in_managed_settings():
    # Managed settings outrank the command line and every user or project settings file.
    assert "COPY managed-settings.json /etc/claude-code/managed-settings.json" in dockerfile()
    permissions = json.loads((CONTAINER_DIR / "managed-settings.json").read_text())["permissions"]

    assert permissions["defaultMode"] == container.CLI_PERMISSION_MODE == "dontAsk"
    assert permissions["allow"] == [container.ALLOWED_TOOLS] == ["Read(//images/**)"]
    assert permissions["deny"] == container.DISALLOWED_TOOLS.split(",")
    assert {"Read(//claude-credentials/**)", "Read(~/**)", "Read(//proc/**)", "Bash"} <= set(permissions["deny"])
    assert permissions["blockReadsOutsideWorkingDirectories"] is True
    assert permissions["disableBypassPermissionsMode"] == "disable"
    assert f"WORKDIR {container.IMAGES_DIR}" in dockerfile()  # the one working directory reads stay in

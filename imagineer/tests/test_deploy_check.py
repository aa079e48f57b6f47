import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_production_settings_pass_check_deploy_without_warnings(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "IMAGINEER_", "DEBUG", "SECRET"))}
    env.update(
        DJANGO_SETTINGS_MODULE="imagineer.settings.base",
        DEBUG="0",
        SECRET_KEY="a-long-random-production-secret-" + "k9Qz" * 10,
        ALLOWED_HOSTS="imagineer.example.com",
        CSRF_TRUSTED_ORIGINS="https://imagineer.example.com",
        IMAGINEER_DATA_DIR=str(tmp_path),
    )
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "System check identified no issues (0 silenced)." in output
    assert "WARNING" not in output

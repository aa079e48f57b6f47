import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = """
import importlib, sys, django
django.setup()
import imagineer.urls
from django.urls import get_resolver
get_resolver().url_patterns
for app in ("imagineer", "gallery", "labeling", "scraping", "training"):
    for mod in ("views", "admin", "urls", "models", "services", "api", "forms"):
        try:
            importlib.import_module(f"{app}.{mod}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{app}.{mod}":
                raise
heavy = sorted(m for m in ("torch", "scrapy", "docker", "diffusers", "transformers", "twisted") if m in sys.modules)
print("HEAVY=" + ",".join(heavy))
"""


def test_the_web_process_never_imports_torch_scrapy_or_docker():
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "imagineer.settings.test"}
    result = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert "HEAVY=\n" in result.stdout, result.stdout

"""The app layering of ARCHITECTURE.md is checked by import-linter, not only followed."""

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _lint_imports(cwd: Path) -> subprocess.CompletedProcess:
    binary = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert binary, "import-linter is in requirements-dev.txt"
    return subprocess.run([binary, "--no-cache"], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_the_apps_keep_their_layers():
    result = _lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 kept, 0 broken" in result.stdout


def test_a_lower_app_importing_a_higher_one_breaks_the_contract(tmp_path):
    # The same contract over a copy of two apps where gallery imports training: lint-imports must refuse it.
    for app in ("imagineer", "gallery", "labeling", "scraping", "training"):
        (tmp_path / app).mkdir()
        (tmp_path / app / "__init__.py").write_text("")
    (tmp_path / "training" / "models.py").write_text("X = 1\n")
    (tmp_path / "gallery" / "views.py").write_text("from training.models import X\n")
    (tmp_path / "pyproject.toml").write_text((ROOT / "pyproject.toml").read_text())
    result = _lint_imports(tmp_path)
    assert result.returncode != 0
    assert "gallery.views -> training.models" in result.stdout

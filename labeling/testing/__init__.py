"""Test doubles for the labeling backends: a private podman API service (podman.py), the
stand-in labeler image with its fake `claude` (image.py, fake_claude.sh) and a stand-in
Anthropic Messages API server (anthropic_stub.py). Used by labeling/tests/conftest.py."""

"""Test settings: the same as base, with test-friendly defaults set before base reads the environment."""

import os
import secrets
import tempfile

os.environ.setdefault("DEBUG", "0")
os.environ.setdefault("SECRET_KEY", "test-only-secret-key-not-for-production-" + "x" * 20)
os.environ.setdefault("ALLOWED_HOSTS", "testserver,127.0.0.1,localhost")
os.environ.setdefault("IMAGINEER_SSL_REDIRECT", "0")
os.environ.setdefault("IMAGINEER_STATIC_MANIFEST", "0")
# Queues and cache keys of this test run get their own prefix, so a test run shares the Redis database that
# REDIS_URL names with a running server (or another test run) without emptying or reading its queues.
# Set in the environment, so the workers a test starts as subprocesses use the same queues.
os.environ.setdefault("IMAGINEER_REDIS_PREFIX", f"test-{os.getpid()}-{secrets.token_hex(3)}:")
if "IMAGINEER_DATA_DIR" not in os.environ:
    os.environ["IMAGINEER_DATA_DIR"] = tempfile.mkdtemp(prefix="imagineer-test-")

from .base import *  # noqa: E402,F403
from .base import LOGGING  # noqa: E402

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
# The test client speaks plain HTTP; production keeps secure cookies (see test_deploy_check).
SESSION_COOKIE_SECURE = False
CSRF_COOKIE_SECURE = False
SECURE_HSTS_SECONDS = 0
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = True
EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
LOGGING["root"]["level"] = "WARNING"

# A concrete Job model used only by the job plumbing tests.
INSTALLED_APPS = [*INSTALLED_APPS, "imagineer.tests.jobsapp"]  # noqa: F405

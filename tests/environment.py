"""Loaded by pytest before Django (``-p tests.environment`` in pyproject.toml).

The test suite runs the production settings with the few values a developer's
shell does not have; anything already set in the environment wins.
"""

from __future__ import annotations

import os

os.environ.setdefault("SECRET_KEY", "test-secret-key-not-for-production-0123456789-abcdefghijklmnop")
os.environ.setdefault("ALLOWED_HOSTS", "testserver,localhost,127.0.0.1")
os.environ.setdefault("SECURE_SSL_REDIRECT", "false")
os.environ.setdefault("SESSION_COOKIE_SECURE", "false")
os.environ.setdefault("CSRF_COOKIE_SECURE", "false")
os.environ.setdefault("SECURE_HSTS_SECONDS", "0")
os.environ.setdefault("STATICFILES_MANIFEST", "false")
# The suite runs with DEBUG off; it starts the embedded servers where
# DATABASE_URL / REDIS_URL are unset, as a developer's machine does.
os.environ.setdefault("CRM_EMBEDDED_SERVERS", "true")
# The throttle counts in the shared Redis cache; tests log in far more often.
os.environ.setdefault("CRM_TOKEN_THROTTLE", "10000/min")
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

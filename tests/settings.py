"""Settings for the test run: the real settings, plus a test-only secret so that plain
`pytest` works without DEBUG, and a fast password hasher."""

import os

os.environ.setdefault("SECRET_KEY", "test-only-secret-key-not-for-production")

from controlplane.settings import *  # noqa: F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

# --- Nodes: the SQLite test database is a file, not memory --------------------------------
# Tests that run the control plane as a real server (the node agent's) serve it from other
# threads; on an in-memory SQLite database those threads share one connection, and concurrent
# requests break each other's transactions. A file gives every thread its own connection.
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":  # noqa: F405
    DATABASES["default"]["TEST"] = {  # noqa: F405
        "NAME": str(VAR_DIR / f"test-{os.getpid()}.sqlite3")  # noqa: F405
    }

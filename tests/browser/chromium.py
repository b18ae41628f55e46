"""Where the browser tests find Chromium, and what they do when it is not there.

Debian's `chromium` package, never a browser Playwright downloads (it has no network for that):
found on PATH or at /usr/bin/chromium. Without it the browser tests skip, loudly; under `CI=true`
they fail instead, since a CI run that silently tested no browser would pass for the wrong reason.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

DEBIAN_CHROMIUM = Path("/usr/bin/chromium")
# Names one executable instead of the search (the tests of the skip set it to a missing path).
OVERRIDE = "SIDECAR_TEST_CHROMIUM"
MISSING = "no chromium (apt-get install chromium)"
SKIPPED_LINE = f"BROWSER TESTS SKIPPED: {MISSING}"
FAILED_LINE = f"BROWSER TESTS FAILED: {MISSING}; CI=true does not skip them"


def find_chromium() -> Path | None:
    """The Chromium executable to drive, or None."""
    override = os.environ.get(OVERRIDE)
    candidates = [override] if override else [shutil.which("chromium"), DEBIAN_CHROMIUM]
    for candidate in candidates:
        if candidate is not None and os.access(candidate, os.X_OK):
            return Path(candidate)
    return None


def under_ci() -> bool:
    """CI sets CI=true (GitHub Actions, GitLab and most others do the same)."""
    return os.environ.get("CI", "").lower() in ("true", "1")


def launch_args(spki_pin: str) -> list[str]:
    """Chromium's command line beyond Playwright's own defaults.

    The certificate: the sidecar serves a trustme leaf whose CA Chromium does not know. Rather
    than `ignore_https_errors` (which accepts any certificate, and leaves the page in an error
    state) or a CA written into an NSS database under $HOME (state outside the test run), the
    browser is told to accept this one leaf's public key and no other:
    `--ignore-certificate-errors-spki-list` takes base64(SHA-256(SubjectPublicKeyInfo)), and
    Chromium honours it only with a `--user-data-dir`, which Playwright always passes (a fresh
    profile).
    Every other certificate is still checked; test_browser_tls.py shows both sides.
    """
    args = [f"--ignore-certificate-errors-spki-list={spki_pin}"]
    # Names resolve to nothing: the tests reach the sidecar by its address, 127.0.0.1, and no
    # page may make the browser look anything up elsewhere.
    args.append("--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1")
    if os.geteuid() == 0:
        # Chromium's sandbox refuses to start as root (it relies on dropping privileges that
        # root keeps), so as root, and only then (containers, CI images), it runs without it.
        # The pages it loads are the sidecar's own, served on loopback by this test run.
        args.append("--no-sandbox")
    return args

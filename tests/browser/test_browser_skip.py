"""Without Chromium the browser tests skip and say so loudly; under CI=true they fail."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.browser.chromium import FAILED_LINE, OVERRIDE, SKIPPED_LINE
from tests.browser.support import ROOT

ONE_BROWSER_TEST = "tests/browser/test_browser_tls.py::test_any_other_certificate_is_still_refused"


def run_without_chromium(**env: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k != "CI"}
    environment.update({OVERRIDE: "/nonexistent/chromium", **env})
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", ONE_BROWSER_TEST],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
        env=environment,
        timeout=120,
    )


def test_without_chromium_the_browser_tests_skip_with_a_loud_line() -> None:
    result = run_without_chromium()
    assert result.returncode == 0, result.stdout[-2000:]
    assert "1 skipped" in result.stdout
    assert SKIPPED_LINE in result.stdout


def test_under_ci_a_missing_chromium_fails_the_run() -> None:
    result = run_without_chromium(CI="true")
    assert result.returncode == 1, result.stdout[-2000:]
    assert "1 error" in result.stdout
    assert FAILED_LINE in result.stdout

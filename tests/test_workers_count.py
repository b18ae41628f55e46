"""`serve --workers`: a count or `auto` (one per usable CPU); anything else is a usage error."""

from __future__ import annotations

import pytest

from sidecar.cli.main import build_parser
from sidecar.runtime.cpus import available_cpus


def test_auto_is_one_worker_per_usable_cpu() -> None:
    args = build_parser().parse_args(["serve", "--workers", "auto"])
    assert args.workers == available_cpus()


def test_a_count_is_taken_as_given() -> None:
    assert build_parser().parse_args(["serve", "--workers", "3"]).workers == 3
    assert build_parser().parse_args(["serve"]).workers == 1


@pytest.mark.parametrize(
    ("value", "complaint"),
    [("0", "must be at least 1"), ("-2", "must be at least 1"), ("many", "neither a number")],
)
def test_a_bad_count_exits_2_naming_the_option(
    value: str, complaint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["serve", "--workers", value])
    assert exited.value.code == 2
    error = capsys.readouterr().err
    assert "--workers" in error
    assert complaint in error


def test_workers_split_the_cpus_their_budgets_are_sized_from() -> None:
    from sidecar.runtime import cpus

    try:
        cpus.share_cpus_among(4)
        assert cpus.cpus_per_worker() == cpus.available_cpus() / 4
    finally:
        cpus.share_cpus_among(1)
    assert cpus.cpus_per_worker() == cpus.available_cpus()

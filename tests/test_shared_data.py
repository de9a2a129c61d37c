"""The reference data cannot be skipped silently: in CI a missing ../shared fails the tests."""

from __future__ import annotations

import pytest

from .conftest import REPO, REQUIRE_ENV, require


def test_missing_shared_data_skips_locally_and_fails_when_required(tmp_path, monkeypatch):
    missing = tmp_path / "no-such-reference"
    monkeypatch.delenv(REQUIRE_ENV, raising=False)
    with pytest.raises(pytest.skip.Exception):
        require(missing)
    monkeypatch.setenv(REQUIRE_ENV, "1")
    with pytest.raises(pytest.fail.Exception, match="no-such-reference"):
        require(missing)
    assert require(tmp_path) == tmp_path  # present data is returned either way


def test_ci_requires_the_reference_and_runs_the_readme_test_command():
    ci = (REPO / ".ci" / "run").read_text()
    readme = (REPO / "README.md").read_text()
    command = ".venv/bin/python -m pytest -q"
    assert command in readme and command in ci
    assert f"export {REQUIRE_ENV}=1" in ci
    assert ci.index(f"export {REQUIRE_ENV}=1") < ci.index(command)

"""The page's files: vendored JavaScript pinned and licensed, nothing remote, all of it in the wheel."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import zipfile

from ..conftest import REPO

STATIC = REPO / "eg3d_invert" / "viewer" / "static"


def test_vendored_files_match_their_npm_release_and_carry_the_licence():
    out = subprocess.run([sys.executable, str(REPO / "scripts" / "vendor_js.py"), "--check"], capture_output=True,
                         text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    manifest = json.loads((STATIC / "vendor" / "vendor.json").read_text())
    for name, pkg in manifest.items():
        assert re.fullmatch(r"\d+\.\d+\.\d+", pkg["version"]) and pkg["integrity"].startswith("sha512-")
        licence = (STATIC / "vendor" / name / pkg["license_file"]).read_text()
        assert pkg["license"] in licence and "Permission is hereby granted" in licence


def test_the_page_loads_nothing_from_elsewhere():
    ours = [STATIC / "index.html", STATIC / "viewer.js", STATIC / "viewer.css"]
    for path in ours:
        text = path.read_text()
        assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}/", text, re.I), f"{path.name} refers to another site"
    imports = json.loads(re.search(r'<script type="importmap">(.*?)</script>', ours[0].read_text(), re.S).group(1))
    for target in imports["imports"].values():
        assert target.startswith("/static/vendor/") and (STATIC / target[len("/static/"):]).exists()
    # every module the vendored code imports is vendored too
    for js in (STATIC / "vendor").rglob("*.js"):
        for spec in re.findall(r"^\s*(?:import|export)\b[^'\"]*?from\s*'([^']+)'", js.read_text(), re.M):
            if spec == "three":
                continue
            assert spec.startswith("."), f"{js.name} imports {spec}"
            assert (js.parent / spec).resolve().is_file(), f"{js.name} imports {spec}, which is not vendored"


def test_the_wheel_carries_the_page(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(REPO / name, src / name)
    shutil.copytree(REPO / "eg3d_invert", src / "eg3d_invert", ignore=shutil.ignore_patterns("__pycache__"))
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                          str(tmp_path / "dist"), str(src)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    wheel = next((tmp_path / "dist").glob("*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for path in STATIC.rglob("*"):
        if path.is_file():
            assert f"eg3d_invert/{path.relative_to(REPO / 'eg3d_invert')}" in names, path

"""Refresh the third-party JavaScript the viewer page ships (eg3d_invert/viewer/static/vendor/).

Usage:
    python scripts/vendor_js.py              # re-fetch the pinned versions, rewrite vendor.json
    python scripts/vendor_js.py --check      # only verify the files against vendor.json

Each package of ``vendor.json`` is fetched with ``npm pack NAME@VERSION`` (the npm registry, its
integrity checked by npm against the value recorded here), and only the listed files are copied,
with the package's licence file. The page loads nothing from a CDN at run time.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

VENDOR = Path(__file__).resolve().parents[1] / "eg3d_invert" / "viewer" / "static" / "vendor"
MANIFEST = VENDOR / "vendor.json"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def check(manifest: dict) -> list[str]:
    """Problems with the vendored files (empty: all files present, listed and unchanged)."""
    problems = []
    listed = set()
    for name, pkg in manifest.items():
        for rel, digest in pkg["files"].items():
            path = VENDOR / name / rel
            listed.add(path)
            if not path.is_file():
                problems.append(f"{name}: {rel} is missing")
            elif sha256(path) != digest:
                problems.append(f"{name}: {rel} differs from npm {pkg['npm']}@{pkg['version']}")
        if pkg["license_file"] not in pkg["files"]:
            problems.append(f"{name}: its licence file is not listed")
    for path in VENDOR.rglob("*"):
        if path.is_file() and path != MANIFEST and path not in listed:
            problems.append(f"{path.relative_to(VENDOR)} is not listed in vendor.json")
    return problems


def fetch(manifest: dict) -> None:
    for name, pkg in manifest.items():
        with tempfile.TemporaryDirectory() as tmp:
            spec = f"{pkg['npm']}@{pkg['version']}"
            out = subprocess.run(["npm", "pack", spec, "--json", "--pack-destination", tmp], check=True,
                                 capture_output=True, text=True)
            info = json.loads(out.stdout)[0]
            if info["integrity"] != pkg["integrity"]:
                sys.exit(f"{spec}: npm integrity {info['integrity']} != recorded {pkg['integrity']}")
            with tarfile.open(Path(tmp) / info["filename"]) as tar:
                tar.extractall(tmp, filter="data")
            target = VENDOR / name
            shutil.rmtree(target, ignore_errors=True)
            for rel in pkg["files"]:
                (target / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(Path(tmp) / "package" / rel, target / rel)
                pkg["files"][rel] = sha256(target / rel)
    MANIFEST.write_text(json.dumps(manifest, indent=2) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="verify only")
    args = ap.parse_args()
    manifest = json.loads(MANIFEST.read_text())
    if not args.check:
        fetch(manifest)
    problems = check(manifest)
    print("\n".join(problems) or f"vendored files match {MANIFEST.name}")
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()

"""Atomic writes: whole files or nothing, with ordinary permissions."""

import os
import stat

import pytest

from eg3d_invert._io import atomic_path, write_json_atomic


def test_atomic_write_replaces_only_on_success(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("interrupted")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]
    write_json_atomic(target, {"a": 1})
    assert target.read_text().strip() == '{\n  "a": 1\n}'


def test_atomic_files_get_umask_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        write_json_atomic(tmp_path / "x.json", [])
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "x.json").stat().st_mode) == 0o644


def test_remove_temporaries_takes_only_ours(tmp_path):
    from eg3d_invert._io import remove_temporaries

    with pytest.raises(KeyboardInterrupt):
        with atomic_path(tmp_path / "sub" / "video.mp4") as tmp:
            ours = tmp
            raise KeyboardInterrupt
    assert not ours.exists()  # an interrupt cleans up itself; only a killed process leaves one behind
    ours.write_bytes(b"half")  # as SIGKILL would have left it
    theirs = [tmp_path / ".keep", tmp_path / ".video.abcdefgh.mp4", tmp_path / "a.abcdefgh.partial.png"]
    for p in theirs:
        p.write_bytes(b"x")
    assert ours.name.startswith(".video.") and ours.name.endswith(".partial.mp4")
    assert remove_temporaries(tmp_path, recursive=False) == [] and ours.exists()
    assert remove_temporaries(tmp_path) == [ours] and not ours.exists()
    assert all(p.exists() for p in theirs)

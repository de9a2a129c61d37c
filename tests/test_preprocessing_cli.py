"""``eg3d-invert align``: outputs, dataset.json, previews, exit codes, bad files, no overwrites."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from eg3d_invert.cli import app


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    import matplotlib.cbook
    import skimage.data

    root = tmp_path_factory.mktemp("photos")
    Image.fromarray(skimage.data.astronaut()).save(root / "astronaut.png")
    (root / "sub").mkdir()
    shutil.copy(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False), root / "sub" / "grace.jpg")
    return root


def run(*args):
    result = CliRunner().invoke(app, ["align", *map(str, args)])
    return result


def test_folder_with_bad_files(photos, tmp_path):
    src = tmp_path / "in"
    shutil.copytree(photos, src)
    (src / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (src / "empty.png").write_bytes(b"")
    Image.new("RGB", (200, 150), (90, 140, 200)).save(src / "sky.png")
    out = tmp_path / "out"
    result = run(src, "--out", out, "--preview")
    assert result.exit_code == 1, result.output
    # good photos written, bad ones reported by name, the batch went on
    for name in ("astronaut", "grace"):
        assert (out / f"{name}.png").is_file() and (out / "previews" / f"{name}.jpg").is_file()
        meta = json.loads((out / f"{name}.json").read_text())
        assert meta["image"] == f"{name}.png" and len(meta["label"]) == 25 and len(meta["landmarks"]) == 478
        assert Image.open(out / f"{name}.png").size == (512, 512)
    assert not (out / "broken.png").exists() and not (out / "sky.json").exists()
    stderr = result.stderr
    assert "broken.jpg" in stderr and "empty.png" in stderr and "sky.png: no face found" in stderr
    assert "Traceback" not in result.output
    dataset = json.loads((out / "dataset.json").read_text())
    assert [f for f, _ in dataset["labels"]] == ["astronaut.png", "grace.png"]
    assert all(len(label) == 25 for _, label in dataset["labels"])
    grace = json.loads((out / "grace.json").read_text())
    assert dataset["labels"][1][1] == grace["label"]
    assert "2 of 5 photos aligned, 3 failed" in stderr
    # inputs untouched
    assert (src / "broken.jpg").read_bytes().startswith(b"\xff\xd8")


def test_all_succeed_exit_zero_and_json(photos, tmp_path):
    out = tmp_path / "out"
    result = run(photos / "astronaut.png", "--out", out, "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["succeeded"] == 1 and doc["failed"] == 0
    face = doc["photos"][0]["faces"][0]
    assert face["file"] == "astronaut.png" and abs(face["yaw"]) < 5
    # a second run into the same folder keeps earlier entries of dataset.json
    result = run(photos / "sub", "--out", out)
    assert result.exit_code == 0, result.output
    names = [f for f, _ in json.loads((out / "dataset.json").read_text())["labels"]]
    assert names == ["astronaut.png", "grace.png"]


def test_never_overwrites_an_input(photos, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(photos / "astronaut.png", src / "astronaut.png")
    before = (src / "astronaut.png").read_bytes()
    result = run(src / "astronaut.png", "--out", src)
    assert result.exit_code == 1
    assert "would overwrite an input photo" in result.stderr
    assert (src / "astronaut.png").read_bytes() == before


def test_two_faces_all_faces_and_face_index(photos, tmp_path):
    a = np.asarray(Image.open(photos / "astronaut.png"))
    g = np.asarray(Image.open(photos / "sub" / "grace.jpg").convert("RGB").resize((341, 400)))
    canvas = np.full((512, 853, 3), 200, np.uint8)
    canvas[:, :512] = a
    canvas[56:456, 512:] = g
    Image.fromarray(canvas).save(tmp_path / "pair.png")
    out = tmp_path / "out"
    result = run(tmp_path / "pair.png", "--out", out, "--all-faces")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.glob("*.png")) == ["pair_face0.png", "pair_face1.png"]
    assert "2 faces" not in result.stdout  # every face kept: nothing to report
    assert len(json.loads((out / "dataset.json").read_text())["labels"]) == 2
    result = run(tmp_path / "pair.png", "--out", tmp_path / "bad", "--face-index", "5")
    assert result.exit_code == 1 and "face index 5" in result.stderr


def test_usage_errors(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run(empty, "--out", tmp_path / "out")
    assert result.exit_code == 2 and "no photos found" in result.stderr  # a usage error, as for invert
    result = run(tmp_path / "missing.jpg", "--out", tmp_path / "out")
    assert result.exit_code == 1 and "missing.jpg: no such file" in result.stderr
    result = run(tmp_path, "--out", tmp_path / "out", "--points", "nose")
    assert result.exit_code == 2
    result = run(tmp_path, "--out", tmp_path / "out", "--all-faces", "--face-index", "1")
    assert result.exit_code == 2


def test_mirror_average_flag_gives_mirrored_points(photos, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    photo = np.asarray(Image.open(photos / "astronaut.png"))
    Image.fromarray(photo).save(src / "a.png")
    Image.fromarray(np.ascontiguousarray(photo[:, ::-1])).save(src / "b.png")
    out = tmp_path / "out"
    result = run(src, "--out", out, "--mirror-average")
    assert result.exit_code == 0, result.output
    a, b = (json.loads((out / f"{n}.json").read_text()) for n in "ab")
    pa, pb = np.array(a["points"]), np.array(b["points"])
    back = pb[[1, 0, 2, 4, 3]]  # swap the eyes and the mouth corners
    back[:, 0] = photo.shape[1] - back[:, 0]
    np.testing.assert_allclose(pa, back, atol=2e-3)  # points are written with 3 decimals


def test_pose_warnings_are_printed_and_recorded(tmp_path):
    """A face cut by the photo's bottom edge is aligned, with a one-line warning on stderr and
    ``pose_warnings`` in NAME.json and in --json; an ordinary portrait gets none."""
    import skimage.data

    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(skimage.data.astronaut()).save(src / "whole.png")
    Image.fromarray(np.ascontiguousarray(skimage.data.astronaut()[:132])).save(src / "cut.png")
    out = tmp_path / "out"
    result = run(src, "--out", out, "--json")
    assert result.exit_code == 0, result.output
    assert "warning:" in result.stderr and "cut.png" in result.stderr and "border:" in result.stderr
    assert result.stderr.count("warning:") == 1
    doc = {p["source"].split("/")[-1]: p for p in json.loads(result.stdout)["photos"]}
    assert "border" in [w.split(":")[0] for w in doc["cut.png"]["faces"][0]["pose_warnings"]]
    assert doc["whole.png"]["faces"][0]["pose_warnings"] == []
    assert json.loads((out / "cut.json").read_text())["pose_warnings"][0].startswith("border:")

"""`eg3d-invert info` and the CLI's global behaviour."""

import json

from typer.testing import CliRunner

from eg3d_invert import __version__
from eg3d_invert.cli import app

from .conftest import REFERENCE, require

runner = CliRunner()


def test_info_json_describes_the_checkpoint():
    result = runner.invoke(app, ["info", str(require(REFERENCE / "tiny_A.pkl")), "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["superresolution_module"] == "SuperresolutionHybrid2X"
    assert info["img_resolution"] == 128 and info["neural_rendering_resolution"] == 32
    assert info["parameters"] == 1_769_832


def test_info_table_and_one_line_errors(tmp_path):
    ok = runner.invoke(app, ["info", str(require(REFERENCE / "tiny_A.pkl"))])
    assert ok.exit_code == 0 and "SuperresolutionHybrid2X" in ok.stdout
    bad = tmp_path / "notes.txt"
    bad.write_text("not a checkpoint")
    result = runner.invoke(app, ["info", str(bad)])
    assert result.exit_code == 1
    assert "not an EG3D checkpoint" in result.stderr and "Traceback" not in result.output
    assert len(result.stderr.strip().splitlines()) == 1


def test_version_and_usage_errors():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.stdout.strip() == __version__
    assert runner.invoke(app, ["info"]).exit_code == 2
    assert runner.invoke(app, ["no-such-command"]).exit_code == 2

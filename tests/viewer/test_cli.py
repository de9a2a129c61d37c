"""``eg3d-invert view``: usage errors, a taken port, and a real run stopped with Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import urllib.request

from typer.testing import CliRunner

from eg3d_invert.cli import app


def test_no_results_is_a_usage_error(tmp_path):
    out = CliRunner().invoke(app, ["view", str(tmp_path), "--no-browser"])
    assert out.exit_code == 2 and "no saved results" in out.output
    assert "Traceback" not in out.output


def test_a_taken_port_is_a_one_line_error(result_dirs, tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        out = CliRunner().invoke(app, ["view", str(result_dirs["grace"]), "--no-browser", "--port", str(port)])
    assert out.exit_code == 1 and f"127.0.0.1:{port}" in out.output and "--port 0" in out.output
    assert "Traceback" not in out.output and "loading" not in out.output  # refused before loading anything


def test_a_missing_device_is_a_usage_error_before_anything_is_loaded(result_dirs):
    # As for invert and render: checked before the port is taken or a result is loaded.
    out = CliRunner().invoke(app, ["view", str(result_dirs["grace"]), "--no-browser", "--port", "0",
                                   "--device", "cuda:999"])
    assert out.exit_code == 2, out.output
    assert "'cuda:999' is not available on this machine (available: cpu" in " ".join(out.output.split())
    assert "Traceback" not in out.output and "loading" not in out.output


def test_not_a_result_is_a_one_line_error(tmp_path):
    (tmp_path / "fake").mkdir()
    (tmp_path / "fake" / "report.json").write_text("{}")
    out = CliRunner().invoke(app, ["view", str(tmp_path / "fake"), "--no-browser", "--port", "0"])
    assert out.exit_code == 1 and "not a saved inversion result" in out.output and "Traceback" not in out.output


def test_view_runs_until_ctrl_c(made_results, sefa_cache, tmp_path):
    env = dict(os.environ, EG3D_INVERT_HOME=str(tmp_path / "home"))
    process = subprocess.Popen([sys.executable, "-m", "eg3d_invert.cli", "view", str(made_results), "--no-browser",
                                "--port", "0", "--device", "cpu"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                               # As from a terminal: a job started in the background by a script (CI
                               # runners may do that) inherits SIGINT ignored, and Ctrl-C would never arrive.
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        url = process.stdout.readline().strip()  # the URL comes first, on stdout
        assert url.startswith("http://127.0.0.1:") and url.endswith("/")
        with urllib.request.urlopen(url + "api/results", timeout=60) as response:
            ids = [r["id"] for r in json.load(response)]
        assert ids == ["astronaut", "grace"]  # a batch folder: every result in it
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, err
    assert "127.0.0.1 only" in err and err.rstrip().endswith("stopped") and "Traceback" not in err
    assert list((tmp_path / "home" / "sefa").glob("*.npz"))  # SeFa cached under EG3D_INVERT_HOME


def test_help_says_where_it_listens():
    out = CliRunner().invoke(app, ["view", "--help"])
    assert out.exit_code == 0 and "127.0.0.1" in out.output and "--no-browser" in out.output

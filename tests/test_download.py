"""The downloader against a local HTTP server serving a real reference checkpoint (tiny_A.pkl)."""

from __future__ import annotations

import functools
import hashlib
import threading

import pytest

from eg3d_invert.errors import ChecksumMismatchError, DownloadError
from eg3d_invert.pretrained import download
from eg3d_invert.pretrained.download import CHUNK_SIZE
from tests.conftest import REFERENCE, require
from tests.local_http import closed_port, file_server  # noqa: F401 - pytest fixture

PATH = "/files/tiny_A.pkl"


@functools.lru_cache(maxsize=1)
def _reference() -> tuple[bytes, str]:
    data = require(REFERENCE / "tiny_A.pkl").read_bytes()
    return data, hashlib.sha256(data).hexdigest()


@pytest.fixture
def served(file_server):  # noqa: F811
    data, sha = _reference()
    file_server.files[PATH] = data
    return file_server, data, sha


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir())


def test_complete_download_with_hash(served, tmp_path):
    srv, data, sha = served
    dest = tmp_path / "cache" / "tiny_A.pkl"
    out = download(srv.url(PATH), dest, expected_sha256=sha, expected_size=len(data), progress=False)
    assert out == dest
    assert dest.read_bytes() == data
    assert _leftovers(dest.parent) == ["tiny_A.pkl"]  # no .part, no .lock
    assert [(r.range, r.status) for r in srv.requests] == [(None, 200)]
    assert srv.bytes_sent == len(data)


def test_interrupted_download_resumes_with_range(served, tmp_path):
    srv, data, sha = served
    cut = 5 * 1024 * 1024 + 123
    srv.drop_after, srv.drops_left = cut, 1
    dest = tmp_path / "tiny_A.pkl"
    with pytest.raises(DownloadError) as err:
        download(srv.url(PATH), dest, expected_sha256=sha, progress=False, retries=0)
    assert "resume" in str(err.value) and str(dest) in str(err.value)
    assert not dest.exists()
    part = tmp_path / "tiny_A.pkl.part"
    kept = part.stat().st_size
    # urllib3 discards a partially filled read when the connection breaks, so up to one chunk
    # of what the server sent may be missing from the .part; what is there must be the prefix.
    assert cut - CHUNK_SIZE < kept <= cut
    assert part.read_bytes() == data[:kept]

    out = download(srv.url(PATH), dest, expected_sha256=sha, progress=False, retries=0)
    assert out.read_bytes() == data
    first, second = srv.requests
    assert first.sent == cut
    assert (second.range, second.status) == (f"bytes={kept}-", 206)
    assert second.sent == len(data) - kept  # the second call fetched only the missing bytes
    assert _leftovers(tmp_path) == ["tiny_A.pkl"]


def test_retry_resumes_within_one_call(served, tmp_path):
    srv, data, sha = served
    srv.drop_after, srv.drops_left = 3_000_000, 2
    seen = []
    out = download(srv.url(PATH), tmp_path / "a.pkl", expected_sha256=sha, retries=2, retry_wait=0,
                   progress=lambda done, total: seen.append((done, total)))
    assert out.read_bytes() == data
    assert [r.status for r in srv.requests] == [200, 206, 206]
    starts = [0] + [int(r.range[len("bytes="):-1]) for r in srv.requests[1:]]
    for prev_start, prev, start in zip(starts, srv.requests, starts[1:]):
        assert prev_start + prev.sent - CHUNK_SIZE < start <= prev_start + prev.sent
    assert srv.requests[-1].sent == len(data) - starts[-1]
    assert seen[-1] == (len(data), len(data))
    assert seen[0] == (0, len(data)) and (starts[1], len(data)) in seen  # restarts report the resume point


def test_wrong_hash_is_rejected_and_leaves_nothing(served, tmp_path):
    srv, data, sha = served
    wrong = "0" * 64
    dest = tmp_path / "cache" / "tiny_A.pkl"
    with pytest.raises(ChecksumMismatchError) as err:
        download(srv.url(PATH), dest, expected_sha256=wrong, progress=False)
    msg = str(err.value)
    assert wrong in msg and sha in msg  # names expected and actual
    assert _leftovers(dest.parent) == []  # no final file, no .part, no .lock


def test_wrong_size_is_rejected_before_the_body(served, tmp_path):
    srv, data, _ = served
    dest = tmp_path / "tiny_A.pkl"
    with pytest.raises(ChecksumMismatchError, match=f"{len(data)} bytes but {len(data) + 1}"):
        download(srv.url(PATH), dest, expected_size=len(data) + 1, progress=False)
    assert _leftovers(tmp_path) == []


def test_server_ignoring_range_restarts_cleanly(served, tmp_path):
    srv, data, sha = served
    srv.ignore_range = True
    dest = tmp_path / "tiny_A.pkl"
    # A stale .part whose bytes are NOT the file's first bytes: appending to it would corrupt.
    (tmp_path / "tiny_A.pkl.part").write_bytes(b"\xff" * 1_000_000)
    out = download(srv.url(PATH), dest, expected_sha256=sha, progress=False)
    assert out.read_bytes() == data
    assert [(r.range, r.status) for r in srv.requests] == [("bytes=1000000-", 200)]
    assert _leftovers(tmp_path) == ["tiny_A.pkl"]


def test_416_with_complete_part_is_finished_without_body(served, tmp_path):
    srv, data, sha = served
    (tmp_path / "tiny_A.pkl.part").write_bytes(data)  # killed between last byte and rename
    out = download(srv.url(PATH), tmp_path / "tiny_A.pkl", expected_sha256=sha, progress=False)
    assert out.read_bytes() == data
    assert [r.status for r in srv.requests] == [416] and srv.bytes_sent == 0


def test_416_with_oversized_part_starts_over(served, tmp_path):
    srv, data, sha = served
    (tmp_path / "tiny_A.pkl.part").write_bytes(data + b"junk")
    out = download(srv.url(PATH), tmp_path / "tiny_A.pkl", expected_sha256=sha, progress=False)
    assert out.read_bytes() == data
    assert [r.status for r in srv.requests] == [416, 200]


def test_unwritable_download_folder_is_one_clear_error(served, unwritable_dir):
    srv, data, sha = served
    with pytest.raises(DownloadError, match="cannot write the download folder") as info:
        download(srv.url(PATH), unwritable_dir / "tiny_A.pkl", expected_sha256=sha, progress=False)
    assert "EG3D_INVERT_HOME" in str(info.value) and "\n" not in str(info.value)


def test_offline_error_names_url_and_destination(tmp_path):
    url = f"http://127.0.0.1:{closed_port()}/files/ffhq512-128.pkl"
    dest = tmp_path / "checkpoints" / "ffhq512-128.pkl"
    with pytest.raises(DownloadError) as err:
        download(url, dest, progress=False, timeout=2)
    msg = str(err.value)
    assert url in msg and str(dest) in msg
    assert "\n" not in msg and "refused" in msg.lower()
    assert _leftovers(dest.parent) == []


def test_http_error_status(served, tmp_path):
    srv, _, _ = served
    url = srv.url("/files/missing.pkl")
    with pytest.raises(DownloadError, match="HTTP 404") as err:
        download(url, tmp_path / "m.pkl", progress=False)
    assert url in str(err.value) and str(tmp_path / "m.pkl") in str(err.value)
    assert _leftovers(tmp_path) == []


def test_existing_destination_is_not_downloaded_again(served, tmp_path):
    srv, data, _ = served
    dest = tmp_path / "tiny_A.pkl"
    dest.write_bytes(b"already here")
    assert download(srv.url(PATH), dest, progress=False).read_bytes() == b"already here"
    assert srv.requests == []
    download(srv.url(PATH), dest, progress=False, overwrite=True)
    assert dest.read_bytes() == data


def test_concurrent_downloads_of_one_file_do_not_collide(served, tmp_path):
    srv, data, sha = served
    srv.chunk_delay = 0.002  # ~0.5 s transfer so the two callers really overlap
    dest = tmp_path / "tiny_A.pkl"
    errors, results = [], []

    def run():
        try:
            results.append(download(srv.url(PATH), dest, expected_sha256=sha, progress=False))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == [] and len(results) == 2
    assert dest.read_bytes() == data
    assert len(srv.requests) == 1 and srv.bytes_sent == len(data)  # the waiter reused the result
    assert _leftovers(tmp_path) == ["tiny_A.pkl"]


def test_bad_expected_hash_argument(tmp_path):
    with pytest.raises(ValueError, match="64 hex"):
        download("http://127.0.0.1:1/x", tmp_path / "x", expected_sha256="abc", progress=False)


def test_waits_for_lock_held_by_another_downloader(served, tmp_path):
    from eg3d_invert.pretrained.download import _download_lock

    srv, _, _ = served
    dest = tmp_path / "tiny_A.pkl"
    with _download_lock(tmp_path / "tiny_A.pkl.lock", dest, timeout=5):
        with pytest.raises(DownloadError, match="another process"):
            download(srv.url(PATH), dest, progress=False, lock_timeout=0.2)
    assert srv.requests == []  # never touched the .part while the other holder had it
    assert _leftovers(tmp_path) == []


def test_progress_bar_on_a_terminal_and_quiet_otherwise(served, tmp_path, monkeypatch, capfd):
    import io

    import rich.console

    srv, data, _ = served
    download(srv.url(PATH), tmp_path / "quiet.pkl", progress=True)  # stderr is not a terminal here
    assert capfd.readouterr().err == ""

    buf = io.StringIO()
    real_console = rich.console.Console
    monkeypatch.setattr(rich.console, "Console",
                        lambda **kw: real_console(file=buf, force_terminal=True, width=120))
    download(srv.url(PATH), tmp_path / "loud.pkl", progress=True)
    assert "loud.pkl" in buf.getvalue() and "16.6" in buf.getvalue()  # name and MB done

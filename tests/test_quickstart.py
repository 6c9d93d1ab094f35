"""tftl.quickstart's first-run path, offline: downloads from file:// and a local HTTP server,
checksums, the flowers5 cut of the archive, seeding from shared/, the offline message."""

import functools
import hashlib
import http.server
import io
import os
import tarfile
import threading

import pytest

from conftest import FLOWERS, MBV2_WEIGHTS, SHARED, need
from tftl import quickstart as qs


def _file(tmp_path, data=b"tftl" * 1000):
    src = tmp_path / "src.bin"
    src.write_bytes(data)
    return src, hashlib.sha256(data).hexdigest(), len(data)


def test_download_file_url_checks_and_caches(tmp_path):
    src, sha, size = _file(tmp_path)
    dest = tmp_path / "cache" / "x.bin"
    out = qs.download(src.as_uri(), str(dest), size=size, sha256=sha, progress=None)
    assert open(out, "rb").read() == src.read_bytes()
    src.unlink()  # the cached, verified copy is reused: no second fetch
    assert qs.download(src.as_uri(), str(dest), size=size, sha256=sha, progress=None) == out


@pytest.mark.parametrize("bad", ["sha256", "size"])
def test_download_refuses_other_bytes_and_leaves_nothing(tmp_path, bad):
    src, sha, size = _file(tmp_path)
    kw = dict(size=size, sha256="0" * 64) if bad == "sha256" else dict(size=size - 1)
    dest = tmp_path / "cache" / "x.bin"
    with pytest.raises(qs.DownloadError, match="different file|more than the expected"):
        qs.download(src.as_uri(), str(dest), progress=None, **kw)
    assert os.listdir(tmp_path / "cache") == []


def test_download_from_local_http_server_with_progress(tmp_path):
    src, sha, size = _file(tmp_path, os.urandom(3 << 20))
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/src.bin"
        bar = io.StringIO()
        out = qs.download(url, str(tmp_path / "c" / "y.bin"), sha256=sha, progress=bar)
        assert hashlib.sha256(open(out, "rb").read()).hexdigest() == sha
        assert f"3.1/{size / 1e6:.1f} MB" in bar.getvalue() and bar.getvalue().endswith("\n")
        with pytest.raises(qs.DownloadError, match="cannot download .*missing"):
            qs.download(url.replace("src", "missing"), str(tmp_path / "c" / "z"), progress=None)
    finally:
        server.shutdown()


def _archive(path, per_class=125):
    with tarfile.open(path, "w:gz") as tar:
        for c in qs.CLASSES:
            for i in range(per_class):
                data = f"{c}{i}".encode()
                info = tarfile.TarInfo(f"flower_photos/{c}/{i:04d}.jpg")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        evil = tarfile.TarInfo("flower_photos/daisy/../../evil.jpg")  # never written
        evil.size = 1
        tar.addfile(evil, io.BytesIO(b"x"))


def test_flowers5_cut_from_the_archive(tmp_path):
    _archive(tmp_path / "f.tgz")
    dest = qs.flowers5_from_archive(str(tmp_path / "f.tgz"), str(tmp_path / "flowers5"))
    for c in qs.CLASSES:
        train = sorted(os.listdir(os.path.join(dest, "train", c)))
        val = sorted(os.listdir(os.path.join(dest, "val", c)))
        assert (len(train), len(val)) == (80, 40) and train[0] == "0000.jpg" and val[0] == "0080.jpg"
    assert not (tmp_path / "evil.jpg").exists() and not (tmp_path / "flowers5.tmp").exists()


def test_quickstart_downloads_through_the_cache_when_no_shared(tmp_path, monkeypatch, capsys):
    _archive(tmp_path / "f.tgz")
    data = (tmp_path / "f.tgz").read_bytes()
    monkeypatch.setenv("TFTL_SHARED", str(tmp_path / "no_shared"))
    monkeypatch.setenv("TFTL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(qs, "FLOWERS_URL", (tmp_path / "f.tgz").as_uri())
    monkeypatch.setattr(qs, "FLOWERS_SIZE", len(data))
    monkeypatch.setattr(qs, "FLOWERS_SHA256", hashlib.sha256(data).hexdigest())
    assert qs.find_flowers(progress=None) == str(tmp_path / "cache" / "flowers5")
    assert len(os.listdir(tmp_path / "cache" / "flowers5" / "val" / "roses")) == 40


def test_offline_without_shared_is_one_line_that_says_what_to_do(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TFTL_SHARED", str(tmp_path / "no_shared"))
    monkeypatch.setenv("TFTL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(qs, "FLOWERS_URL", "http://127.0.0.1:9/flower_photos.tgz")  # refused
    assert qs.main(["--prepare-only"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: cannot download")
    assert "TFTL_SHARED" in err[0] and str(tmp_path / "cache") in err[0]


def test_seeds_from_shared_without_network(monkeypatch, capsys):
    need(FLOWERS), need(MBV2_WEIGHTS)
    monkeypatch.setenv("TFTL_SHARED", SHARED)
    monkeypatch.setattr(qs, "FLOWERS_URL", "http://127.0.0.1:9/never")
    assert qs.main(["--prepare-only"]) == 0
    out = capsys.readouterr().out
    assert FLOWERS in out and MBV2_WEIGHTS in out

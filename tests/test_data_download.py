"""``rlur data download``: local file:// archives and monkeypatched openers only (never the network)."""

from __future__ import annotations

import hashlib
import io
import tarfile
import urllib.error
from pathlib import Path
from typing import ClassVar

import pytest

from rlur.data import commands
from rlur.data.download import KUAIRAND_PURE, DownloadError, download_dataset, verify_archive
from rlur.data.fixtures import write_fixture
from rlur.data.kuairand import load_kuairand

quiet = {"progress": False, "log": lambda *_: None}


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> Path:
    """A KuaiRand-Pure.tar.gz built from a small synthetic fixture."""
    base = tmp_path_factory.mktemp("src")
    info = write_fixture(base, n_users=20, n_videos=15, n_days=16, seed=2)
    path = base / "KuaiRand-Pure.tar.gz"
    with tarfile.open(path, "w:gz") as tf:
        tf.add(info.root, arcname="KuaiRand-Pure")
    return path


def _evil_archive(path: Path, name: str, kind: bytes = tarfile.REGTYPE) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        ti = tarfile.TarInfo(name)
        ti.type = kind
        data = b"x"
        ti.size = 0 if kind != tarfile.REGTYPE else len(data)
        if kind == tarfile.SYMTYPE:
            ti.linkname = "/etc/passwd"
        tf.addfile(ti, io.BytesIO(data) if kind == tarfile.REGTYPE else None)
    return path


def test_download_from_file_url_unpacks_a_loadable_folder(tmp_path: Path, archive: Path) -> None:
    md5 = hashlib.md5(archive.read_bytes()).hexdigest()
    folder = download_dataset("kuairand-pure", tmp_path / "dl", url=archive.as_uri(), md5=md5, **quiet)
    assert folder == tmp_path / "dl" / "KuaiRand-Pure"
    assert (tmp_path / "dl" / "KuaiRand-Pure.tar.gz").is_file()
    assert not list((tmp_path / "dl").glob("*.part")) and not list((tmp_path / "dl").glob(".rlur-extract-*"))
    assert len(load_kuairand(folder).logs) > 0
    # Already complete: nothing is fetched again (an opener that fails proves it).
    def fail(url, timeout):
        raise AssertionError("must not download")
    assert download_dataset("kuairand-pure", tmp_path / "dl", url=archive.as_uri(), opener=fail, **quiet) == folder


def test_offline_is_one_clean_line(tmp_path: Path, capsys) -> None:
    def offline(url, timeout):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")
    with pytest.raises(DownloadError) as err:
        download_dataset("kuairand-pure", tmp_path, opener=offline, **quiet)
    msg = str(err.value)
    assert "cannot download https://zenodo.org/records/10439422/files/KuaiRand-Pure.tar.gz" in msg
    assert "--archive" in msg and "\n" not in msg
    assert not list(tmp_path.glob("*.part"))


def test_cli_reports_offline_error_without_traceback(tmp_path: Path, capsys, monkeypatch) -> None:
    import rlur.data.download as dl

    def offline(url, timeout):
        raise urllib.error.URLError("no network")
    monkeypatch.setattr(dl, "_open_url", offline)
    rc = commands.main(["data", "download", "kuairand-pure", "--dest", str(tmp_path), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith("rlur: error: cannot download") and err.count("\n") == 1


def test_checksum_mismatch_and_truncation_are_rejected(tmp_path: Path, archive: Path) -> None:
    with pytest.raises(DownloadError, match="MD5"):
        download_dataset("kuairand-pure", tmp_path / "a", url=archive.as_uri(), md5="0" * 32, **quiet)
    assert not list((tmp_path / "a").glob("*.part")) and not (tmp_path / "a" / "KuaiRand-Pure").exists()
    data = archive.read_bytes()

    class Short(io.BytesIO):
        headers: ClassVar[dict[str, str]] = {"Content-Length": str(len(data))}
    with pytest.raises(DownloadError, match="incomplete"):
        download_dataset("kuairand-pure", tmp_path / "b", opener=lambda u, t: Short(data[:1000]), **quiet)
    # The official URL is checked against the pinned size and checksums.
    with pytest.raises(DownloadError, match="bytes, expected 47,432,272"):
        download_dataset("kuairand-pure", tmp_path / "c", opener=lambda u, t: io.BytesIO(data), **quiet)


def test_unsafe_or_wrong_archives_are_not_extracted(tmp_path: Path) -> None:
    for i, (name, kind, what) in enumerate((
        ("../evil.csv", tarfile.REGTYPE, "unsafe member path"),
        ("/etc/evil.csv", tarfile.REGTYPE, "unsafe member path"),
        ("Other/data/x.csv", tarfile.REGTYPE, "outside KuaiRand-Pure"),
        ("KuaiRand-Pure/link", tarfile.SYMTYPE, "link or special file"),
        ("KuaiRand-Pure/data/readme.txt", tarfile.REGTYPE, "lacks KuaiRand-Pure/data/log_standard"),
    )):
        path = _evil_archive(tmp_path / f"evil{i}.tar.gz", name, kind)
        with pytest.raises(DownloadError, match=what):
            verify_archive(path, KUAIRAND_PURE)
        with pytest.raises(DownloadError, match=what):
            download_dataset("kuairand-pure", tmp_path / f"d{i}", archive=path, verify=False, **quiet)
        assert not (tmp_path / f"d{i}" / "KuaiRand-Pure").exists()
    bad = tmp_path / "not.tar.gz"
    bad.write_bytes(b"this is not gzip")
    with pytest.raises(DownloadError, match="not a valid gzip tar archive"):
        download_dataset("kuairand-pure", tmp_path / "e", archive=bad, verify=False, **quiet)
    assert not (tmp_path.parent / "evil.csv").exists()


def test_cli_unpacks_a_local_archive(tmp_path: Path, archive: Path, capsys) -> None:
    rc = commands.main(["data", "download", "kuairand-pure", "--dest", str(tmp_path), "--archive", str(archive),
                        "--no-verify", "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    assert (tmp_path / "KuaiRand-Pure" / "data" / "user_features_pure.csv").is_file()

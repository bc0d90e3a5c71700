"""``rlur data download kuairand-pure``: fetch, verify and safely unpack KuaiRand-Pure from Zenodo.

Steps: stream the archive to ``DEST/KuaiRand-Pure.tar.gz.part`` (tqdm progress bar) while hashing it;
check its size, MD5 and SHA-256 against the pinned values; rename it; check that it is a gzip tar
whose members all lie under ``KuaiRand-Pure/`` (no absolute paths, no ``..``, no links or devices)
and that the files rlur needs are there; extract into a temporary folder next to the destination
and move ``KuaiRand-Pure/`` into place. Any failure is one :class:`DownloadError` line (a
``ValueError``), including being offline.

The pinned archive identity (size 47,432,272 bytes; MD5 and SHA-256 below) and member sizes come
from a public third-party manifest of Zenodo record 10439422 whose SHA-256 for the two feature files
and the licence match the real files byte for byte. A different URL (``--url``) is only checked
against an MD5 the caller gives (``--md5``) and for the archive's structure.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from tqdm.auto import tqdm

__all__ = ["DATASETS", "KUAIRAND_PURE", "ArchiveSpec", "DownloadError", "download_dataset", "safe_extract",
           "verify_archive"]

_CHUNK = 1 << 20


class DownloadError(ValueError):
    """A download, verification or extraction failure (one line, shown by the CLI)."""


@dataclass(frozen=True)
class ArchiveSpec:
    """What a dataset archive should be."""

    name: str
    url: str
    filename: str
    root: str
    """The archive's single top-level folder."""
    required: tuple[str, ...]
    """Members that must be present (paths inside the archive)."""
    size: int | None = None
    md5: str | None = None
    sha256: str | None = None
    member_sizes: dict[str, int] = field(default_factory=dict)


KUAIRAND_PURE = ArchiveSpec(
    name="kuairand-pure",
    url="https://zenodo.org/records/10439422/files/KuaiRand-Pure.tar.gz?download=1",
    filename="KuaiRand-Pure.tar.gz",
    root="KuaiRand-Pure",
    required=(
        "KuaiRand-Pure/data/log_standard_4_08_to_4_21_pure.csv",
        "KuaiRand-Pure/data/log_standard_4_22_to_5_08_pure.csv",
        "KuaiRand-Pure/data/user_features_pure.csv",
        "KuaiRand-Pure/data/video_features_basic_pure.csv",
    ),
    size=47_432_272,
    md5="0820331067a3784d9691136f772b35a7",
    sha256="c814bf6f3624c0cfae83c57de3df26b2ed206e5c57bab4c4dcbfabbabe20cbf0",
    member_sizes={
        "KuaiRand-Pure/data/log_standard_4_08_to_4_21_pure.csv": 83_961_282,
        "KuaiRand-Pure/data/log_standard_4_22_to_5_08_pure.csv": 21_765_075,
        "KuaiRand-Pure/data/log_random_4_22_to_5_08_pure.csv": 87_086_116,
        "KuaiRand-Pure/data/user_features_pure.csv": 3_519_028,
        "KuaiRand-Pure/data/video_features_basic_pure.csv": 626_669,
    },
)
DATASETS: dict[str, ArchiveSpec] = {KUAIRAND_PURE.name: KUAIRAND_PURE}

Opener = Callable[[str, float], BinaryIO]


def _open_url(url: str, timeout: float) -> BinaryIO:
    req = urllib.request.Request(url, headers={"User-Agent": "rlur-data-download"})
    return urllib.request.urlopen(req, timeout=timeout)


def _reason(err: BaseException) -> str:
    if isinstance(err, urllib.error.HTTPError):
        return f"HTTP {err.code} {err.reason}"
    if isinstance(err, urllib.error.URLError):
        return str(err.reason)
    return str(err) or type(err).__name__


def _fetch(url: str, part: Path, opener: Opener, timeout: float, progress: bool, filename: str) -> tuple[int, str, str]:
    """Stream ``url`` into ``part``; returns (bytes, md5, sha256). Removes ``part`` on failure."""
    hint = f"check the network, or download {filename} by hand and pass --archive FILE"
    try:
        resp = opener(url, timeout)
    except (TimeoutError, urllib.error.URLError, OSError, ValueError) as err:
        raise DownloadError(f"cannot download {url}: {_reason(err)} ({hint})") from None
    headers = getattr(resp, "headers", None)
    length = headers.get("Content-Length") if headers is not None else None
    total = int(length) if length and str(length).isdigit() else None
    md5, sha, n = hashlib.md5(usedforsecurity=False), hashlib.sha256(), 0
    try:
        with resp, part.open("wb") as fh, tqdm(total=total, desc=f"downloading {filename}", unit="B",
                                               unit_scale=True, disable=not progress, leave=False) as bar:
            while chunk := resp.read(_CHUNK):
                fh.write(chunk)
                md5.update(chunk)
                sha.update(chunk)
                n += len(chunk)
                bar.update(len(chunk))
    except (TimeoutError, OSError, ValueError) as err:
        part.unlink(missing_ok=True)
        raise DownloadError(f"download of {url} failed after {n:,} bytes: {_reason(err)} ({hint})") from None
    if total is not None and n != total:
        part.unlink(missing_ok=True)
        raise DownloadError(f"download of {url} is incomplete: {n:,} of {total:,} bytes ({hint})")
    return n, md5.hexdigest(), sha.hexdigest()


def _hash_file(path: Path) -> tuple[int, str, str]:
    md5, sha, n = hashlib.md5(usedforsecurity=False), hashlib.sha256(), 0
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            md5.update(chunk)
            sha.update(chunk)
            n += len(chunk)
    return n, md5.hexdigest(), sha.hexdigest()


def _check_digests(what: str, got: tuple[int, str, str], size: int | None, md5: str | None,
                   sha256: str | None) -> None:
    n, m, s = got
    if size is not None and n != size:
        raise DownloadError(f"{what} has {n:,} bytes, expected {size:,} (a truncated or different file; "
                            "pass --no-verify to skip the checksum check)")
    if md5 is not None and m != md5.lower():
        raise DownloadError(f"{what} has MD5 {m}, expected {md5.lower()} (pass --no-verify to skip the checksum "
                            "check)")
    if sha256 is not None and s != sha256.lower():
        raise DownloadError(f"{what} has SHA-256 {s}, expected {sha256.lower()} (pass --no-verify to skip)")


def _member_name(name: str) -> str:
    while name.startswith("./"):
        name = name[2:]
    return name.rstrip("/")


def verify_archive(path: str | Path, spec: ArchiveSpec, check_member_sizes: bool = True) -> list[tarfile.TarInfo]:
    """Check that ``path`` is a gzip tar with only safe members under ``spec.root`` and every required file.

    Returns the members to extract.
    """
    path = Path(path)
    try:
        with tarfile.open(path, "r:gz") as tf:
            members = tf.getmembers()
    except (tarfile.TarError, OSError, EOFError) as err:
        raise DownloadError(f"{path} is not a valid gzip tar archive: {err}") from None
    names: dict[str, tarfile.TarInfo] = {}
    for m in members:
        name = _member_name(m.name)
        parts = name.split("/")
        if not name or name.startswith("/") or "\\" in name or ".." in parts or (len(name) > 1 and name[1] == ":"):
            raise DownloadError(f"{path}: unsafe member path {m.name!r} (absolute or with '..'); not extracted")
        if parts[0] != spec.root:
            raise DownloadError(f"{path}: member {m.name!r} lies outside {spec.root}/; not extracted")
        if not (m.isfile() or m.isdir()):
            raise DownloadError(f"{path}: member {m.name!r} is a link or special file; not extracted")
        names[name] = m
    missing = [r for r in spec.required if r not in names]
    if missing:
        raise DownloadError(f"{path} lacks {', '.join(missing)}; is it the {spec.name} archive?")
    if check_member_sizes:
        for name, size in spec.member_sizes.items():
            if name in names and names[name].size != size:
                raise DownloadError(f"{path}: {name} has {names[name].size:,} bytes, expected {size:,} "
                                    "(pass --no-verify to skip)")
    return members


def safe_extract(path: str | Path, dest: str | Path, spec: ArchiveSpec, force: bool = False,
                 check_member_sizes: bool = True) -> Path:
    """Verify (:func:`verify_archive`) and extract ``path`` so that ``dest/spec.root`` appears atomically."""
    path, dest = Path(path), Path(dest)
    members = verify_archive(path, spec, check_member_sizes)
    final = dest / spec.root
    if final.exists() and not force:
        raise DownloadError(f"{final} already exists but is incomplete; remove it or pass --force")
    tmp = Path(tempfile.mkdtemp(prefix=".rlur-extract-", dir=dest))
    try:
        with tarfile.open(path, "r:gz") as tf:
            kwargs = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
            try:
                tf.extractall(tmp, members=members, **kwargs)
            except (tarfile.TarError, OSError, EOFError) as err:
                raise DownloadError(f"cannot extract {path}: {err}") from None
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp / spec.root, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def _complete(folder: Path, spec: ArchiveSpec) -> bool:
    base = folder.parent
    return all((base / r).is_file() and (not spec.member_sizes.get(r) or (base / r).stat().st_size ==
                                         spec.member_sizes[r]) for r in spec.required)


def download_dataset(
    name: str, dest: str | Path, *, url: str | None = None, archive: str | Path | None = None, md5: str | None = None,
    verify: bool = True, force: bool = False, keep_archive: bool = True, progress: bool = True,
    timeout: float = 60.0, opener: Opener | None = None, log: Callable[[str], None] = print,
) -> Path:
    """Download (or take ``archive``), verify and unpack dataset ``name`` into ``dest``; returns its folder.

    ``url`` replaces the official URL (e.g. a ``file://`` mirror); the pinned checksums then apply
    only if ``verify`` and the URL is the official one, while ``md5`` is always checked when given.
    ``opener(url, timeout)`` replaces :func:`urllib.request.urlopen` (tests).
    """
    if name not in DATASETS:
        raise DownloadError(f"unknown dataset {name!r}; available: {', '.join(DATASETS)}")
    spec = DATASETS[name]
    dest = Path(dest)
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DownloadError(f"cannot create {dest}: {err.strerror or err}") from None
    target = dest / spec.root
    official = url is None or url == spec.url
    pinned = verify and official
    if _complete(target, spec) and not force:
        log(f"{target} is already complete; nothing to do (pass --force to fetch it again)")
        return target
    if archive is not None:
        path = Path(archive)
        if not path.is_file():
            raise FileNotFoundError(f"archive {path} does not exist")
        if verify and (pinned or md5):
            _check_digests(str(path), _hash_file(path), spec.size if pinned else None,
                           md5 or (spec.md5 if pinned else None), spec.sha256 if pinned else None)
    else:
        path = dest / spec.filename
        reuse = path.is_file() and not force
        if reuse:
            try:
                if pinned or md5:
                    _check_digests(str(path), _hash_file(path), spec.size if pinned else None,
                                   md5 or (spec.md5 if pinned else None), spec.sha256 if pinned else None)
                log(f"using the archive already at {path}")
            except DownloadError:
                reuse = False
        if not reuse:
            part = path.with_name(path.name + ".part")
            got = _fetch(url or spec.url, part, opener or _open_url, timeout, progress, spec.filename)
            try:
                if pinned or md5:
                    _check_digests(f"the download of {url or spec.url}", got, spec.size if pinned else None,
                                   md5 or (spec.md5 if pinned else None), spec.sha256 if pinned else None)
            except DownloadError:
                part.unlink(missing_ok=True)
                raise
            os.replace(part, path)
            log(f"downloaded {got[0]:,} bytes to {path}")
    folder = safe_extract(path, dest, spec, force=True, check_member_sizes=pinned)
    if archive is None and not keep_archive:
        path.unlink(missing_ok=True)
    log(f"unpacked {spec.name} into {folder}")
    return folder

"""Download, checksum verification and safe extraction of the registered datasets.

The only module of the project that touches the network (``urllib``; no third-party client).

* :func:`download` streams into ``<file>.part``, hashes while writing (SHA-256 and MD5), checks
  every known checksum and only then renames to the final name. A failed or mismatching download
  leaves no final file behind. Offline: a :class:`DownloadError` that says so and says how to
  place the file by hand.
* :func:`safe_extract` unpacks zip and tar (.tar, .tar.gz, .tgz) archives. Every member is checked
  *before* anything is written: absolute paths, ``..`` escapes, devices and FIFOs, and every path
  and link is resolved against the target through the archive's own symlinks as they would be on
  disk (:func:`_land`: ``a -> .`` then ``a/b -> ..`` is a chain that leaves the target, caught
  although each link alone looks harmless), and through links already on disk; whatever leaves
  the target raises :class:`UnsafeArchiveError` (zip archives may hold no symlinks at all). The
  archive is then extracted into a staging folder beside the target (tar additionally with Python's
  ``filter="data"``) and moved in only when all of it was written, so any refusal or error is one
  line and leaves nothing of that archive in the target.
* :func:`fetch` = for each resource: reuse a verified local copy (also one placed by hand),
  else download from the mirrors in order; verify; extract (or copy) into ``raw/``; record the
  checksums in ``raw/.xnn_fetch.json`` (read by the converters into each dataset's ``spec``),
  atomically and only after the extraction succeeded: ``python -m data_scripts list`` says
  "fetched" only when that manifest covers every resource.
* :func:`verify` recomputes the checksums of the downloaded files; where the registry has no
  SHA-256 yet it prints the computed one ("fill in after the first verified download").
"""
from __future__ import annotations

import hashlib
import json
import os
import posixpath
import shutil
import stat
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path
from typing import Dict, Iterable, List, Optional

from . import registry
from .common import MANIFEST, downloads_dir, raw_dir

__all__ = ["DownloadError", "ChecksumError", "ArchiveError", "UnsafeArchiveError", "hash_file", "check_hashes",
           "download", "safe_extract", "fetch", "verify", "fetched"]

_CHUNK = 1 << 20


class DownloadError(RuntimeError):
    """A download failed (offline, HTTP error, consent page instead of data)."""


class ChecksumError(ValueError):
    """A file's checksum differs from the registry's."""


class ArchiveError(ValueError):
    """An archive cannot be extracted (corrupt, truncated, unsupported)."""


class UnsafeArchiveError(ArchiveError):
    """An archive member would be written outside the target folder (or is a device/FIFO)."""


def _say(msg: str) -> None:
    print(msg, flush=True)


# --------------------------------------------------------------------------- checksums

def hash_file(path: Path) -> Dict[str, str]:
    """SHA-256 and MD5 hex digests of a file, read in 1 MiB chunks."""
    sha, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            sha.update(chunk)
            md5.update(chunk)
    return {"sha256": sha.hexdigest(), "md5": md5.hexdigest()}


def check_hashes(res: registry.Resource, got: Dict[str, str], path: Path) -> bool:
    """Raise :class:`ChecksumError` when a known checksum differs; True when at least one known
    checksum was checked, False when the registry has none for this file."""
    checked = False
    for algo in ("sha256", "md5"):
        want = getattr(res, algo)
        if want:
            checked = True
            if got[algo].lower() != want.lower():
                raise ChecksumError(f"{algo} mismatch for {path}: expected {want}, got {got[algo]}. "
                                    "The file is corrupt or not the published one; delete it and "
                                    "fetch again.")
    return checked


# --------------------------------------------------------------------------- download

def download(url: str, dest: Path, res: Optional[registry.Resource] = None,
             timeout: float = 60.0) -> Dict[str, str]:
    """Stream ``url`` to ``dest`` via ``dest.part``; verify against ``res``; return the hashes."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    sha, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
    req = urllib.request.Request(url, headers={"User-Agent": "xnn-data-scripts/0.1"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r, open(part, "wb") as f:
            ctype = (r.headers.get("Content-Type") or "").lower()
            if ctype.startswith("text/html") and not dest.name.endswith((".html", ".htm")):
                raise DownloadError(f"{url} returned an HTML page instead of {dest.name} "
                                    "(quota, login or consent page?)")
            total = int(r.headers.get("Content-Length") or 0) or None
            from xnn_support.core.utils import progress

            with progress(total=total, unit="B", unit_scale=True, desc=dest.name) as bar:
                for chunk in iter(lambda: r.read(_CHUNK), b""):
                    f.write(chunk)
                    sha.update(chunk)
                    md5.update(chunk)
                    bar.update(len(chunk))
    except (urllib.error.URLError, OSError, ValueError) as e:
        part.unlink(missing_ok=True)
        reason = getattr(e, "reason", e)
        raise DownloadError(f"could not download {url}: {reason} (offline?)") from e
    except DownloadError:
        part.unlink(missing_ok=True)
        raise
    got = {"sha256": sha.hexdigest(), "md5": md5.hexdigest()}
    if res is not None:
        try:
            check_hashes(res, got, part)
        except ChecksumError:
            part.unlink(missing_ok=True)
            raise
    os.replace(part, dest)
    return got


# --------------------------------------------------------------------------- extraction

def _inside(target: str, rel: str) -> bool:
    """Whether ``rel`` (posix, relative to ``target``) stays inside after normalisation."""
    full = posixpath.normpath(posixpath.join(target, rel))
    return full == target or full.startswith(target.rstrip("/") + "/")


def _check_name(name: str, target: str) -> str:
    n = name.replace("\\", "/")
    if not n or n.startswith("/") or (n[:1].isalpha() and n[1:2] == ":") or "\x00" in n:
        raise UnsafeArchiveError(f"refusing absolute member path {name!r}")
    if not _inside(target, n):
        raise UnsafeArchiveError(f"refusing member {name!r}: it resolves outside {target}")
    return n


def _land(rel: str, links: Dict[str, str], member: str, *, follow_last: bool = True) -> str:
    """Where ``rel`` (relative to the target) lands once the archive's symlinks met on the way are
    followed, as the file system will follow them (``links``: link path -> its target, relative to
    the link's folder); raises :class:`UnsafeArchiveError` for anything that leaves the target."""
    parts = [p for p in rel.split("/") if p not in ("", ".")]
    done: List[str] = []
    hops = 0
    while parts:
        p = parts.pop(0)
        if p == "..":
            if not done:
                raise UnsafeArchiveError(f"refusing member {member!r}: through its links it resolves outside "
                                         "the target folder")
            done.pop()
            continue
        here = "/".join(done + [p])
        if here in links and (parts or follow_last):
            hops += 1
            if hops > 40:
                raise UnsafeArchiveError(f"refusing member {member!r}: a symlink loop")
            link = links[here]
            if link.startswith("/"):
                raise UnsafeArchiveError(f"refusing member {member!r}: a link to an absolute path {link!r}")
            parts = [q for q in link.split("/") if q not in ("", ".")] + parts
            continue
        done.append(p)
    return "/".join(done)


def _on_disk_inside(target: str, rel: str, member: str) -> None:
    """Links already in the target folder count too: the real path must stay inside."""
    real = os.path.realpath(os.path.join(target, rel))
    if not (real == target or real.startswith(target.rstrip("/") + "/")):
        raise UnsafeArchiveError(f"refusing member {member!r}: it would be written through a link outside {target}")


def _tar_members(tf: tarfile.TarFile, target: str, include) -> List[tarfile.TarInfo]:
    out, links = [], {}
    for m in tf.getmembers():
        n = _check_name(m.name, target)
        parent = _land(posixpath.dirname(n), links, m.name)
        own = posixpath.join(parent, posixpath.basename(n)) if parent else posixpath.basename(n)
        _on_disk_inside(target, parent, m.name)
        if m.issym() or m.islnk():
            link = m.linkname.replace("\\", "/")
            if link.startswith("/"):
                raise UnsafeArchiveError(f"refusing link {m.name!r} -> absolute {m.linkname!r}")
            try:  # a symlink's target is relative to its folder, a hard link's to the archive root
                _land(posixpath.join(parent, link) if m.issym() else link, links, m.name)
            except UnsafeArchiveError:
                raise UnsafeArchiveError(f"refusing link {m.name!r} -> {m.linkname!r} (it leaves the target "
                                         "folder, directly or through other links)") from None
            if m.issym():
                links[own] = link
        elif not (m.isfile() or m.isdir()):
            raise UnsafeArchiveError(f"refusing special member {m.name!r} (device/FIFO)")
        else:
            _land(own, links, m.name)
        if _wanted(n, include):
            out.append(m)
    return out


def _wanted(name: str, include: Iterable[str]) -> bool:
    """Whether member ``name`` lies under one of the ``include`` prefixes (all when empty)."""
    include = tuple(include)
    key = posixpath.normpath(name) + "/"
    return not include or any(key.startswith(p) for p in include)


def _zip_members(zf: zipfile.ZipFile, target: str, include) -> List[zipfile.ZipInfo]:
    out = []
    for info in zf.infolist():
        n = _check_name(info.filename, target)
        if stat.S_ISLNK(info.external_attr >> 16):
            raise UnsafeArchiveError(f"refusing symlink member {info.filename!r} in a zip archive")
        _on_disk_inside(target, posixpath.dirname(n), info.filename)
        if _wanted(n, include):
            out.append(info)
    return out


def _merge(src: Path, dst: Path) -> None:
    """Move the staged tree ``src`` into ``dst`` (folders merged; a file or link replaces what was there)."""
    dst.mkdir(parents=True, exist_ok=True)
    for e in os.scandir(src):
        s, d = Path(e.path), dst / e.name
        if e.is_dir(follow_symlinks=False) and d.is_dir() and not d.is_symlink():
            _merge(s, d)
            continue
        if d.is_symlink() or d.is_file():
            d.unlink()
        elif d.is_dir():
            shutil.rmtree(d)
        os.replace(s, d)


def _extract_all(archive: Path, stage: Path, t: str, include) -> int:
    name = archive.name.lower()
    if name.endswith(".zip"):
        with zipfile.ZipFile(archive) as zf:
            members = _zip_members(zf, t, include)
            for info in members:
                zf.extract(info, stage)
        return len(members)
    with tarfile.open(archive) as tf:
        members = _tar_members(tf, t, include)
        kw = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        tf.extractall(stage, members=members, **kw)
    return len(members)


def safe_extract(archive: Path, target: Path, include: Iterable[str] = ()) -> int:
    """Extract ``archive`` into ``target`` after checking every member; return the number of
    members extracted. ``include`` keeps only members under these path prefixes. Any refusal or
    failure raises a one-line :class:`ArchiveError` (:class:`UnsafeArchiveError` for an escape) and
    leaves nothing of the archive in ``target``."""
    archive, target = Path(archive), Path(target)
    if not archive.name.lower().endswith((".zip", ".tar", ".tar.gz", ".tgz")):
        raise ValueError(f"unsupported archive type: {archive.name} (zip, tar, tar.gz, tgz)")
    target.mkdir(parents=True, exist_ok=True)
    t = posixpath.normpath(target.resolve().as_posix())
    stage = Path(tempfile.mkdtemp(prefix=f".{target.name}.extract-", dir=str(target.parent)))
    try:
        try:
            n = _extract_all(archive, stage, t, include)
        except ArchiveError:
            raise
        except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError, ValueError) as e:
            kind = UnsafeArchiveError if isinstance(e, getattr(tarfile, "FilterError", ())) else ArchiveError
            msg = " ".join(str(e).split())[:300]
            raise kind(f"cannot extract {archive.name}: {type(e).__name__}: {msg}; delete it and fetch again") from None
        _merge(stage, target)
        return n
    finally:
        shutil.rmtree(stage, ignore_errors=True)


# --------------------------------------------------------------------------- fetch / verify

def _local_ok(res: registry.Resource, path: Path) -> Optional[Dict[str, str]]:
    if not path.is_file():
        return None
    got = hash_file(path)
    check_hashes(res, got, path)
    return got


def fetch(name: str, root=None, force: bool = False, dataset: Optional[registry.Dataset] = None,
          timeout: float = 60.0) -> Path:
    """Download (if needed), verify and extract every resource of ``name``; return ``raw/``.
    ``dataset`` overrides the registry entry (tests use ``file://`` URLs)."""
    ds = dataset or registry.get(name)
    dl, raw = downloads_dir(ds.name, root), raw_dir(ds.name, root)
    dl.mkdir(parents=True, exist_ok=True)
    manifest_path = raw / MANIFEST
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, json.JSONDecodeError):
        manifest = {}
    for res in ds.resources:
        path = dl / res.filename
        if force:
            path.unlink(missing_ok=True)
        got = _local_ok(res, path)
        if got is None:
            errors = []
            for url in res.urls:
                _say(f"[{ds.name}] downloading {res.filename} {res.size_note} from {url}")
                try:
                    got = download(url, path, res, timeout=timeout)
                    break
                except (DownloadError, ChecksumError) as e:
                    errors.append(str(e))
            if got is None:
                hint = ds.manual.format(downloads=dl, raw=raw) if ds.manual else (
                    f"Download {res.filename} by hand from {ds.homepage} into {dl} and rerun "
                    f"`python -m data_scripts fetch {ds.name}`.")
                raise DownloadError(f"[{ds.name}] no mirror of {res.filename} worked ("
                                    + "; ".join(" ".join(e.split()) for e in errors) + f"). {hint}")
        if not (res.sha256 or res.md5):
            _say(f"[{ds.name}] {res.filename}: no published checksum; sha256 {got['sha256']} "
                 "(pin it in data_scripts/registry.py)")
        done = manifest.get(res.filename, {})
        if done.get("sha256") == got["sha256"] and not force:
            continue
        if res.extract:
            _say(f"[{ds.name}] extracting {res.filename} into {raw}")
            safe_extract(path, raw, res.include)
        else:
            raw.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, raw / res.filename)
        manifest[res.filename] = {"sha256": got["sha256"], "md5": got["md5"],
                                  "pinned": bool(res.sha256 or res.md5)}
        raw.mkdir(parents=True, exist_ok=True)
        tmp = manifest_path.with_name(f".{MANIFEST}.{os.getpid()}.tmp")  # atomic: never half a manifest
        tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True))
        os.replace(tmp, manifest_path)
    _say(f"[{ds.name}] ready in {raw}. Next: python -m data_scripts convert {ds.name}")
    return raw


def fetched(name: str, root=None, dataset: Optional[registry.Dataset] = None) -> bool:
    """Whether every resource of ``name`` was verified and extracted by :func:`fetch` (the manifest in
    ``raw/`` records each one, with the checksum of the download it came from)."""
    ds = dataset or registry.get(name)
    try:
        manifest = json.loads((raw_dir(ds.name, root) / MANIFEST).read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return isinstance(manifest, dict) and all(
        isinstance(manifest.get(r.filename), dict) and manifest[r.filename].get("sha256") for r in ds.resources)


def verify(name: str, root=None, dataset: Optional[registry.Dataset] = None) -> bool:
    """Recompute the checksums of the downloaded files of ``name``; print one line per file.
    True when every file is present and matches; files without a pinned checksum count as
    present-and-unpinned (their SHA-256 is printed for pinning)."""
    ds = dataset or registry.get(name)
    dl = downloads_dir(ds.name, root)
    ok = True
    for res in ds.resources:
        path = dl / res.filename
        if not path.is_file():
            _say(f"MISSING  {path}  (python -m data_scripts fetch {ds.name})")
            ok = False
            continue
        got = hash_file(path)
        try:
            pinned = check_hashes(res, got, path)
        except ChecksumError as e:
            _say(f"BAD      {e}")
            ok = False
            continue
        if pinned:
            _say(f"OK       {path}  sha256 {got['sha256']}")
        else:
            _say(f"UNPINNED {path}  sha256 {got['sha256']}  (fill in after the first verified "
                 "download: data_scripts/registry.py)")
    return ok

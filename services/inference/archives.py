"""Safe extraction of model archives (.zip, .tar, .tar.gz, .tgz, .tar.bz2, .tar.xz).

Every member is checked before anything is written: absolute paths, ``..`` escapes, links
pointing outside the target and device files are refused, naming the member. Extraction goes
into a temporary folder beside the target that is renamed into place at the end, so a crash
never leaves a half-extracted model behind.
"""

from __future__ import annotations

import logging
import os
import posixpath
import shutil
import stat
import tarfile
import uuid
import zipfile
import zlib
from pathlib import Path

log = logging.getLogger(__name__)

ARCHIVE_SUFFIXES: tuple[str, ...] = (
    ".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz",
)
_JUNK = {"__MACOSX", ".DS_Store"}


class ArchiveError(ValueError):
    """The archive is unsafe or unreadable; the message names the archive and the member."""


def is_archive(path: str | Path) -> bool:
    """Whether ``path`` names an archive by its suffix."""
    return str(path).lower().endswith(ARCHIVE_SUFFIXES)


def safe_extract(archive: str | Path, target: str | Path) -> Path:
    """Extract ``archive`` into the folder ``target`` and return the model root inside it.

    The model root is ``target`` itself, or its only top-level folder when the archive holds
    exactly one. If ``target`` already exists (an earlier complete extraction) it is reused.
    """
    archive, target = Path(archive), Path(target)
    if target.is_dir():
        return model_root(target)
    if not archive.is_file():
        raise ArchiveError(f"archive {archive} does not exist")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.partial-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        if zipfile.is_zipfile(archive):
            _extract_zip(archive, tmp)
        elif _is_tar(archive):
            _extract_tar(archive, tmp)
        else:
            raise ArchiveError(f"{archive} is not a zip or tar archive")
        try:
            os.rename(tmp, target)
        except OSError:
            if not target.is_dir():  # someone else finished first: theirs is as good as ours
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    log.info("extracted %s into %s", archive, target)
    return model_root(target)


def model_root(folder: Path) -> Path:
    """``folder``, or its single top-level subfolder when that is all it holds (ignoring OS junk)."""
    entries = [p for p in folder.iterdir() if p.name not in _JUNK]
    if len(entries) == 1 and entries[0].is_dir() and not entries[0].is_symlink():
        return entries[0]
    return folder


# --- checks ----------------------------------------------------------------------------------------

def _member_path(archive: Path, name: str) -> str:
    """The normalised relative path of a member, refusing absolute paths and ``..`` escapes."""
    clean = name.replace("\\", "/")
    if clean.startswith("/") or (len(clean) > 1 and clean[1] == ":"):
        raise ArchiveError(f"{archive}: member {name!r} has an absolute path")
    parts = [p for p in clean.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ArchiveError(f"{archive}: member {name!r} escapes the target folder ('..')")
    return "/".join(parts)


def _check_link(archive: Path, member: str, link: str, *, hard: bool) -> None:
    """A link must stay inside: symlinks resolve from the member's folder, hard links from the root."""
    link = link.replace("\\", "/")
    kind = "hard link" if hard else "symlink"
    if link.startswith("/") or (len(link) > 1 and link[1] == ":"):
        raise ArchiveError(f"{archive}: {kind} {member!r} points to the absolute path {link!r}")
    base = "" if hard else posixpath.dirname(member)
    resolved = posixpath.normpath(posixpath.join(base, link))
    if resolved == ".." or resolved.startswith("../"):
        raise ArchiveError(f"{archive}: {kind} {member!r} points outside the target folder ({link!r})")


def _inside(root: Path, dest: Path, archive: Path, name: str) -> None:
    """Refuse writes that would go through an already-extracted link to somewhere outside ``root``."""
    real_root = os.path.realpath(root)
    real = os.path.realpath(dest)
    if real != real_root and not real.startswith(real_root + os.sep):
        raise ArchiveError(f"{archive}: member {name!r} would be written outside the target folder")


# --- zip -------------------------------------------------------------------------------------------

def _extract_zip(archive: Path, root: Path) -> None:
    try:
        with zipfile.ZipFile(archive) as zf:
            infos = zf.infolist()
            plan: list[tuple[zipfile.ZipInfo, str, str | None]] = []
            for info in infos:
                rel = _member_path(archive, info.filename)
                mode = info.external_attr >> 16
                if stat.S_ISLNK(mode):
                    link = zf.read(info).decode("utf-8")
                    _check_link(archive, rel, link, hard=False)
                    plan.append((info, rel, link))
                elif mode and (stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISFIFO(mode)
                               or stat.S_ISSOCK(mode)):
                    raise ArchiveError(f"{archive}: member {info.filename!r} is a device or special file")
                else:
                    plan.append((info, rel, None))
            for info, rel, target in plan:
                if not rel:
                    continue
                dest = root / rel
                _inside(root, dest.parent, archive, info.filename)
                if target is not None:
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    os.symlink(target, dest)
                elif info.is_dir():
                    dest.mkdir(parents=True, exist_ok=True)
                else:
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    _inside(root, dest, archive, info.filename)
                    with zf.open(info) as src, open(dest, "wb") as out:
                        shutil.copyfileobj(src, out, 1 << 20)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, zlib.error) as exc:
        raise ArchiveError(f"{archive}: corrupt zip archive ({exc})") from None
    except OSError as exc:
        raise ArchiveError(f"{archive}: cannot extract ({exc}); the archive may be corrupt") from None


# --- tar -------------------------------------------------------------------------------------------

def _is_tar(archive: Path) -> bool:
    try:
        return tarfile.is_tarfile(archive)
    except OSError:
        return False


def _extract_tar(archive: Path, root: Path) -> None:
    try:
        with tarfile.open(archive) as tf:
            members = tf.getmembers()
            for m in members:
                rel = _member_path(archive, m.name)
                if m.isdev() or not (m.isfile() or m.isdir() or m.issym() or m.islnk()):
                    raise ArchiveError(f"{archive}: member {m.name!r} is a device or special file")
                if m.issym():
                    _check_link(archive, rel, m.linkname, hard=False)
                elif m.islnk():
                    _member_path(archive, m.linkname)
                    _check_link(archive, rel, m.linkname, hard=True)
            # every member passed our checks; the stdlib "data" filter is a second line of defence
            # (it also drops set-uid bits and foreign ownership)
            tf.extractall(root, members=members, filter="data")
    except tarfile.FilterError as exc:
        raise ArchiveError(f"{archive}: unsafe member refused ({exc})") from None
    except (tarfile.TarError, EOFError, zlib.error) as exc:
        raise ArchiveError(f"{archive}: corrupt tar archive ({exc})") from None
    except OSError as exc:
        raise ArchiveError(f"{archive}: cannot extract ({exc}); the archive may be corrupt") from None

"""Unpacking zip and tar archives safely: nothing a member says can write outside the destination.

    files = safe_extract("download.zip", dest, members=["ml-100k/u.data"])

:func:`safe_extract` refuses, before anything is written, absolute member names, ``..``
components, special files and links that point outside the destination; while writing, a
member whose folder resolves outside it through a link extracted earlier; at the end, a link
that resolves outside it through other links. Used by :mod:`benchmarks.data.fetch` for
downloads and wheels.
"""

from __future__ import annotations

import os
import posixpath
import re
import shutil
import stat
import tarfile
import zipfile
from pathlib import Path, PurePosixPath
from typing import Sequence

from benchmarks.errors import GenrecError


class UnsafeArchiveError(GenrecError):
    """An archive member that would be written outside the destination folder."""

    def __init__(self, archive: str | Path, member: str, reason: str):
        self.archive, self.member, self.reason = str(archive), member, reason
        super().__init__(f"{archive}: refusing to extract member {member!r}: {reason} "
                         "(it could write outside the destination folder)")


def _member_path(archive: Path, name: str) -> PurePosixPath:
    text = name.replace("\\", "/")
    path = PurePosixPath(text)
    if text.startswith("/") or re.match(r"[A-Za-z]:(/|$)", text):
        raise UnsafeArchiveError(archive, name, "an absolute path")
    if ".." in path.parts:
        raise UnsafeArchiveError(archive, name, "a '..' path component")
    if not path.parts:
        raise UnsafeArchiveError(archive, name, "an empty name")
    return path


def _inside(path: str | Path, root: Path) -> bool:
    real = os.path.realpath(path)
    return real == str(root) or real.startswith(str(root) + os.sep)


def _present(archive: Path, members: Sequence[str], names: Sequence[str]) -> Sequence[str]:
    known = set(names)
    for m in members:
        if m not in known:
            raise GenrecError(f"{archive}: no member {m!r}")
    return members


def _prepare(target: Path, root: Path, archive: Path, name: str) -> None:
    """Create ``target``'s parent and check that it really lies inside ``root`` (following
    any link already extracted); a link already at ``target`` is removed, not written through."""
    for _ in range(2):  # before creating folders (a link may lead elsewhere), and after
        if not _inside(target.parent, root):
            raise UnsafeArchiveError(archive, name, "its folder resolves outside the destination")
        target.parent.mkdir(parents=True, exist_ok=True)
    if target.is_symlink():
        target.unlink()


def _extract_zip(archive: Path, dest: Path, root: Path,
                 members: Sequence[str] | None) -> list[Path]:
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as e:
        raise GenrecError(f"{archive}: not a readable zip archive ({e})") from None
    with zf:
        infos = zf.infolist() if members is None else [
            zf.getinfo(m) for m in _present(archive, members, zf.namelist())]
        checked = []
        for info in infos:  # check every member before writing anything
            path = _member_path(archive, info.filename)
            if stat.S_ISLNK(info.external_attr >> 16):
                raise UnsafeArchiveError(archive, info.filename, "a symbolic link")
            checked.append((info, path))
        written = []
        for info, path in checked:
            target = dest.joinpath(*path.parts)
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            _prepare(target, root, archive, info.filename)
            with zf.open(info) as src, open(target, "wb") as out:
                shutil.copyfileobj(src, out)
            written.append(target)
    return written


def _extract_tar(archive: Path, dest: Path, root: Path,
                 members: Sequence[str] | None) -> list[Path]:
    try:
        tf = tarfile.open(archive)
    except (tarfile.TarError, OSError) as e:
        raise GenrecError(f"{archive}: not a readable tar archive ({e})") from None
    with tf:
        infos = tf.getmembers() if members is None else [
            tf.getmember(m) for m in _present(archive, members, tf.getnames())]
        checked = []
        for m in infos:  # check every member before writing anything
            path = _member_path(archive, m.name)
            if m.issym():
                if m.linkname.startswith("/") or posixpath.normpath(
                        posixpath.join(str(path.parent), m.linkname)).split("/")[0] == "..":
                    raise UnsafeArchiveError(archive, m.name,
                                             f"a link to {m.linkname!r} outside the destination")
            elif m.islnk():
                _member_path(archive, m.linkname)
            elif not (m.isfile() or m.isdir()):
                raise UnsafeArchiveError(archive, m.name, "a device, fifo or other special file")
            checked.append((m, path))
        written, links = [], []
        for m, path in checked:
            target = dest.joinpath(*path.parts)
            if m.isdir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            _prepare(target, root, archive, m.name)
            if m.issym():
                if not _inside(target.parent / m.linkname, root):
                    raise UnsafeArchiveError(archive, m.name,
                                             f"a link to {m.linkname!r} outside the destination")
                os.symlink(m.linkname, target)
                links.append((m.name, target))
            else:  # regular file, or a hard link: written as a copy of the linked member
                src = tf.extractfile(m)
                if src is None:
                    raise GenrecError(f"{archive}: member {m.name!r} has no data")
                with src, open(target, "wb") as out:
                    shutil.copyfileobj(src, out)
            written.append(target)
    for name, link in links:  # a chain of links, each fine when made, may lead out in the end
        if not _inside(link, root):
            link.unlink()
            raise UnsafeArchiveError(archive, name, "a link that resolves outside the destination")
    return written


def safe_extract(archive_path: str | Path, dest: str | Path,
                 members: Sequence[str] | None = None) -> list[Path]:
    """Extract a zip or tar(.gz/.bz2/.xz) archive (all of it, or the named ``members``) into
    ``dest``; returns the files written.

    Refused with :class:`UnsafeArchiveError`, before anything is written: absolute member
    names, ``..`` components, special files, zip symlinks and tar links pointing outside
    ``dest``; while writing, a member whose folder resolves outside ``dest`` through a link
    extracted earlier; at the end, a link that resolves outside ``dest`` through other links
    (it is removed). File modes and owners are not restored.
    """
    archive, dest = Path(archive_path), Path(dest)
    if not archive.is_file():
        raise GenrecError(f"{archive}: expected an existing archive file")
    dest.mkdir(parents=True, exist_ok=True)
    root = Path(os.path.realpath(dest))
    if zipfile.is_zipfile(archive):
        return _extract_zip(archive, dest, root, members)
    if tarfile.is_tarfile(archive):
        return _extract_tar(archive, dest, root, members)
    raise GenrecError(f"{archive}: expected a zip or tar archive")

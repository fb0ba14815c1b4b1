"""safe_extract: good archives extract whole; anything escaping the target is refused before writing."""

from __future__ import annotations

import io
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest

from services.inference.archives import ArchiveError, is_archive, safe_extract


def make_zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def zip_symlink(zf: zipfile.ZipFile, name: str, target: str) -> None:
    info = zipfile.ZipInfo(name)
    info.create_system = 3  # unix
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    zf.writestr(info, target)


def tar_add(
    tf: tarfile.TarFile, name: str, data: bytes = b"", *, kind: bytes = tarfile.REGTYPE, linkname: str = ""
) -> None:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    info.mode = 0o644
    tf.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)


def assert_nothing_left(tmp_path: Path, target: Path) -> None:
    assert not target.exists()
    assert not [p for p in target.parent.iterdir() if ".partial-" in p.name]
    assert not (tmp_path / "evil.txt").exists()
    assert not (tmp_path.parent / "evil.txt").exists()


def test_good_zip_with_one_top_folder_returns_that_folder(tmp_path):
    archive = make_zip(
        tmp_path / "model.zip",
        {
            "my-model/config.json": b'{"a": 1}',
            "my-model/1_Pooling/config.json": b"{}",
            "__MACOSX/._junk": b"x",
        },
    )
    root = safe_extract(archive, tmp_path / "out")
    assert root == tmp_path / "out" / "my-model"
    assert (root / "config.json").read_bytes() == b'{"a": 1}'
    assert (root / "1_Pooling" / "config.json").read_bytes() == b"{}"
    # a second call reuses the extraction
    (root / "marker").write_text("kept")
    assert safe_extract(archive, tmp_path / "out") == root and (root / "marker").exists()


def test_good_flat_tar_gz_returns_target(tmp_path):
    archive = tmp_path / "model.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        tar_add(tf, "config.json", b"{}")
        tar_add(tf, "weights/model.bin", b"\x00" * 100)
        tar_add(tf, "weights/alias.bin", kind=tarfile.SYMTYPE, linkname="model.bin")  # inside: fine
    root = safe_extract(archive, tmp_path / "out")
    assert root == tmp_path / "out"
    assert (root / "weights" / "model.bin").stat().st_size == 100
    assert (root / "weights" / "alias.bin").read_bytes() == b"\x00" * 100


def test_zip_slip_refused(tmp_path):
    archive = make_zip(tmp_path / "evil.zip", {"ok.txt": b"fine", "../evil.txt": b"pwned"})
    with pytest.raises(ArchiveError, match=r"'\.\./evil\.txt'.*escapes"):
        safe_extract(archive, tmp_path / "sub" / "out")
    assert_nothing_left(tmp_path, tmp_path / "sub" / "out")


def test_zip_nested_dotdot_and_backslashes_refused(tmp_path):
    archive = make_zip(tmp_path / "evil.zip", {"a/b/../../../evil.txt": b"pwned"})
    with pytest.raises(ArchiveError, match="escapes"):
        safe_extract(archive, tmp_path / "out")
    archive = make_zip(tmp_path / "evil2.zip", {"..\\evil.txt": b"pwned"})
    with pytest.raises(ArchiveError, match="escapes"):
        safe_extract(archive, tmp_path / "out")
    assert_nothing_left(tmp_path, tmp_path / "out")


def test_zip_absolute_path_refused(tmp_path):
    archive = make_zip(tmp_path / "abs.zip", {"/tmp/evil.txt": b"pwned"})
    with pytest.raises(ArchiveError, match="absolute"):
        safe_extract(archive, tmp_path / "out")
    assert_nothing_left(tmp_path, tmp_path / "out")


def test_zip_symlink_escape_refused(tmp_path):
    archive = tmp_path / "link.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zip_symlink(zf, "model/escape", "../../outside")
        zf.writestr("model/escape/evil.txt", b"pwned")
    with pytest.raises(ArchiveError, match="symlink 'model/escape' points outside"):
        safe_extract(archive, tmp_path / "out")
    assert_nothing_left(tmp_path, tmp_path / "out")


def test_tar_dotdot_refused(tmp_path):
    archive = tmp_path / "evil.tar"
    with tarfile.open(archive, "w") as tf:
        tar_add(tf, "model/config.json", b"{}")
        tar_add(tf, "model/../../evil.txt", b"pwned")
    with pytest.raises(ArchiveError, match="escapes"):
        safe_extract(archive, tmp_path / "out")
    assert_nothing_left(tmp_path, tmp_path / "out")


def test_tar_absolute_refused(tmp_path):
    archive = tmp_path / "abs.tgz"
    with tarfile.open(archive, "w:gz") as tf:
        tar_add(tf, str(tmp_path / "evil.txt"), b"pwned")
    with pytest.raises(ArchiveError, match="absolute"):
        safe_extract(archive, tmp_path / "out")
    assert_nothing_left(tmp_path, tmp_path / "out")


@pytest.mark.parametrize(
    ("linkname", "needle"),
    [
        ("../../etc/passwd", "points outside"),
        ("/etc/passwd", "absolute"),
    ],
)
def test_tar_symlink_escape_refused(tmp_path, linkname, needle):
    archive = tmp_path / "link.tar"
    with tarfile.open(archive, "w") as tf:
        tar_add(tf, "model/passwd", kind=tarfile.SYMTYPE, linkname=linkname)
    with pytest.raises(ArchiveError, match=f"symlink 'model/passwd'.*{needle}"):
        safe_extract(archive, tmp_path / "out")
    assert_nothing_left(tmp_path, tmp_path / "out")


def test_tar_symlink_then_write_through_it_refused(tmp_path):
    archive = tmp_path / "chain.tar"
    with tarfile.open(archive, "w") as tf:
        tar_add(tf, "up", kind=tarfile.SYMTYPE, linkname="..")
        tar_add(tf, "up/evil.txt", b"pwned")
    with pytest.raises(ArchiveError):
        safe_extract(archive, tmp_path / "out")
    assert_nothing_left(tmp_path, tmp_path / "out")


def test_tar_hardlink_escape_refused(tmp_path):
    archive = tmp_path / "hard.tar"
    with tarfile.open(archive, "w") as tf:
        tar_add(tf, "model/shadow", kind=tarfile.LNKTYPE, linkname="../outside.txt")
    with pytest.raises(ArchiveError, match="hard link|escapes"):
        safe_extract(archive, tmp_path / "out")
    assert_nothing_left(tmp_path, tmp_path / "out")


@pytest.mark.parametrize("kind", [tarfile.CHRTYPE, tarfile.BLKTYPE, tarfile.FIFOTYPE])
def test_tar_device_files_refused(tmp_path, kind):
    archive = tmp_path / "dev.tar"
    with tarfile.open(archive, "w") as tf:
        tar_add(tf, "model/config.json", b"{}")
        tar_add(tf, "model/null", kind=kind)
    with pytest.raises(ArchiveError, match="'model/null' is a device or special file"):
        safe_extract(archive, tmp_path / "out")
    assert_nothing_left(tmp_path, tmp_path / "out")


def test_not_an_archive_and_corrupt_archives(tmp_path):
    junk = tmp_path / "model.zip"
    junk.write_bytes(b"this is not a zip file at all")
    with pytest.raises(ArchiveError, match="not a zip or tar"):
        safe_extract(junk, tmp_path / "out")
    good = make_zip(tmp_path / "cut.zip", {"a/big.bin": bytes(range(256)) * 4000})
    data = good.read_bytes()
    good.write_bytes(data[: len(data) // 2] + data[-200:])
    with pytest.raises(ArchiveError):
        safe_extract(good, tmp_path / "out2")
    assert not (tmp_path / "out").exists() and not (tmp_path / "out2").exists()
    with pytest.raises(ArchiveError, match="does not exist"):
        safe_extract(tmp_path / "missing.tar", tmp_path / "out3")


def test_is_archive_by_suffix():
    assert all(is_archive(n) for n in ("m.zip", "m.tar", "m.tar.gz", "M.TGZ", "m.tar.xz"))
    assert not any(is_archive(n) for n in ("m.pt", "m.bin", "m.safetensors", "m.gz"))

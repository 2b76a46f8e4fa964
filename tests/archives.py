"""Test helper: build small tar archives with files, symlinks and hard links (data_scripts tests)."""
import io
import tarfile
from pathlib import Path


def make_tar(path: Path, members):
    """Write ``members`` = [(name, "file" | "sym" | "hard", link target or None)] into a .tar(.gz) at ``path``."""
    with tarfile.open(path, "w:gz") as tf:
        for name, kind, target in members:
            ti = tarfile.TarInfo(name)
            if kind == "file":
                ti.size = 2
                tf.addfile(ti, io.BytesIO(b"ok"))
            else:
                ti.type = tarfile.SYMTYPE if kind == "sym" else tarfile.LNKTYPE
                ti.linkname = target
                tf.addfile(ti)
    return path

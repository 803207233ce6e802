"""Never overwrite, never share: the file-system side of writing one acquisition file.

- :class:`Reservation`: ``<final>.partial`` is created exclusively (``O_CREAT | O_EXCL |
  O_NOFOLLOW``) and empty before the detector is armed, so a second writer to the same name
  fails at once and harms nothing; the writer later truncates only the file it created
  (same device and inode, still empty).
- :func:`rename_no_clobber`: ``.partial`` -> final name with ``link`` + ``unlink``, which fails
  when the final name exists (``os.replace`` would silently replace it).
- :func:`free_bytes` and :func:`describe_write_error`: free space, and HDF5's multi-line I/O
  errors as one line that names the cause (disk full, file size limit).
"""

from __future__ import annotations

import errno
import logging
import os
import re
from pathlib import Path

import h5py

from stemdaq.errors import PathError

logger = logging.getLogger(__name__)

_HDF5_ERRNO = re.compile(r"errno = (\d+), error message = '([^']*)'")


def free_bytes(folder: Path) -> int:
    """Bytes an unprivileged writer may still use on the file system of ``folder``."""
    st = os.statvfs(folder)
    return st.f_bavail * st.f_frsize


def describe_write_error(exc: BaseException) -> str:
    """``disk full (No space left on device)`` and the like, from an h5py/OS error."""
    text = str(exc)
    code = getattr(exc, "errno", None)
    m = _HDF5_ERRNO.search(text)
    if m:
        code, text = int(m.group(1)), m.group(2)
    if code in (errno.ENOSPC, errno.EDQUOT):
        return f"disk full ({text if m else os.strerror(code)})"
    if code == errno.EFBIG:
        return f"file size limit reached ({text if m else os.strerror(code)})"
    if code is not None and m:
        return f"I/O error {code} ({text})"
    lines = text.strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"


class Reservation:
    """An empty ``tmp_path`` created exclusively for one acquisition's file."""

    def __init__(self, tmp_path: Path, final_path: Path, overwrite: bool = False) -> None:
        self.tmp_path = tmp_path
        self.final_path = final_path
        self.overwrite = overwrite
        self._id: tuple[int, int] | None = None  # (st_dev, st_ino) of the empty file we made

    @property
    def held(self) -> bool:
        """True between :meth:`take` and :meth:`drop`."""
        return self._id is not None

    def take(self) -> None:
        """Create the empty ``.partial``.

        Raises
        ------
        PathError
            The final file exists (and ``overwrite`` is not set), or the ``.partial`` exists
            (another acquisition writes it, or one was cut short and it holds its frames).
        """
        if self._id is not None:
            return
        if os.path.isdir(self.final_path):
            raise PathError(f"{self.final_path} is a directory")
        if not self.overwrite and os.path.lexists(self.final_path):
            raise PathError(
                f"{self.final_path} exists already; choose another name "
                "(or allow replacing it: --overwrite)"
            )
        self.tmp_path.parent.mkdir(parents=True, exist_ok=True)
        flags = os.O_CREAT | os.O_EXCL | os.O_WRONLY | getattr(os, "O_NOFOLLOW", 0)
        try:
            fd = os.open(self.tmp_path, flags, 0o644)
        except FileExistsError:
            raise PathError(
                f"{self.tmp_path} exists: another acquisition is writing it, or one was cut "
                "short and it holds that acquisition's frames (check it with `stemdaq inspect`, "
                "then move it away to reuse the name)"
            ) from None
        except OSError as exc:
            raise PathError(f"cannot create {self.tmp_path}: {exc.strerror or exc}") from None
        try:
            st = os.fstat(fd)
        finally:
            os.close(fd)
        self._id = (st.st_dev, st.st_ino)

    def check(self) -> None:
        """The ``.partial`` is still the empty file we created (before truncating it)."""
        try:
            st = os.lstat(self.tmp_path)
        except OSError as exc:
            raise PathError(f"{self.tmp_path} vanished before the first frame: {exc}") from None
        if self._id is None or (st.st_dev, st.st_ino) != self._id or st.st_size:
            raise PathError(
                f"{self.tmp_path} was replaced by something else before the first frame; "
                "not writing into it"
            )

    def drop(self, remove: bool) -> None:
        """Forget the reservation; with ``remove`` delete the file if it is still our empty one."""
        if self._id is None:
            return
        if remove:
            try:
                st = os.lstat(self.tmp_path)
                if (st.st_dev, st.st_ino) == self._id and st.st_size == 0:
                    os.unlink(self.tmp_path)
            except FileNotFoundError:
                pass
            except OSError as exc:
                logger.warning("cannot remove the empty %s: %s", self.tmp_path, exc)
        self._id = None


def rename_no_clobber(tmp_path: Path, final_path: Path, overwrite: bool = False) -> Path:
    """``tmp_path`` -> ``final_path`` atomically, never over an existing file (unless
    ``overwrite``); returns where the file is (``tmp_path`` if the final name is taken)."""
    if overwrite:
        os.replace(tmp_path, final_path)
        return final_path
    try:
        os.link(tmp_path, final_path)  # fails if the name exists (no clobbering)
    except FileExistsError:
        logger.error("%s appeared while recording; the data stay in %s", final_path, tmp_path)
        return tmp_path
    except OSError:  # a file system without hard links: check, then rename
        if os.path.lexists(final_path):
            return tmp_path
        os.rename(tmp_path, final_path)
        return final_path
    os.unlink(tmp_path)
    return final_path


def sync_fd(fd: int, name: str) -> None:
    """fdatasync + POSIX_FADV_DONTNEED (both release the GIL)."""
    try:
        os.fdatasync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    except OSError as exc:  # e.g. a filesystem without fadvise: only the page cache grows
        logger.debug("%s: fdatasync/fadvise not done: %s", name, exc)


class Ballast:
    """Disk space held in reserve for finishing the file after the disk filled up.

    An anonymous file (created and unlinked at once, so nothing is left behind even after
    ``kill -9``) with ``nbytes`` allocated by ``posix_fallocate``; :meth:`release` closes it
    and gives the space back, so HDF5 can write the metadata that closing a file needs.
    """

    def __init__(self, folder: Path, nbytes: int) -> None:
        self.folder = Path(folder)
        self.nbytes = int(nbytes)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        """True while the space is reserved."""
        return self._fd is not None

    def take(self) -> bool:
        """Reserve the space; False (and nothing held) when the file system cannot."""
        if self._fd is not None or self.nbytes <= 0:
            return self._fd is not None
        try:
            fd = os.open(self.folder, os.O_TMPFILE | os.O_RDWR, 0o600)
        except (AttributeError, OSError):  # no O_TMPFILE here: a named file, unlinked at once
            import tempfile

            fd, name = tempfile.mkstemp(prefix=".stemdaq-reserve-", dir=self.folder)
            os.unlink(name)
        try:
            os.posix_fallocate(fd, 0, self.nbytes)
        except OSError as exc:
            os.close(fd)
            logger.warning(
                "cannot reserve %.0f MB in %s for closing the file after a full disk: %s",
                self.nbytes / 1e6,
                self.folder,
                exc.strerror or exc,
            )
            return False
        self._fd = fd
        return True

    def release(self) -> None:
        """Give the space back (idempotent)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def still_open(path: Path) -> bool:
    """True if HDF5 still holds ``path`` open in this process (a close that failed halfway:
    opening it again in the same process was seen to crash it)."""
    target = os.path.realpath(path)
    for fid in h5py.h5f.get_obj_ids(types=h5py.h5f.OBJ_FILE):
        try:
            if os.path.realpath(fid.name.decode()) == target:
                return True
        except (ValueError, RuntimeError):
            continue
    return False

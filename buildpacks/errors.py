"""The one error type a user sees, and how the entry points (command line, Hatch target,
PEP 517 backend) turn any failure into a single ``error:`` line and an exit status."""

from __future__ import annotations

import errno
import os
import re
import traceback
from collections.abc import Callable, Mapping
from pathlib import Path

# Exit status of a build stopped by Ctrl-C, as shells report a SIGINT death (128 + 2).
INTERRUPTED = 130
DEBUG_VARIABLE = "BP_DEBUG"


class BuildError(Exception):
    """A problem with the user's input or environment, worded for the user.

    Adapters print ``str(error)`` on one line and exit non-zero.
    """


# What a user can do about the operating-system errors a build meets, by errno.
_OS_HINTS = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EROFS: "read-only file system",
    errno.ENOTDIR: "a file is where a directory is needed",
    errno.EISDIR: "a directory is where a file is needed",
    errno.EEXIST: "already exists",
    errno.ELOOP: "too many levels of symbolic links",
    errno.ENAMETOOLONG: "file name too long",
}


def _where(error: BaseException) -> str:
    """The innermost frame of ours (or, failing that, the innermost) the error came from."""
    frames = traceback.extract_tb(error.__traceback__)
    ours = [f for f in frames if f"{os.sep}buildpacks{os.sep}" in f.filename] or frames
    if not ours:
        return ""
    frame = ours[-1]
    path = Path(frame.filename)
    short = "/".join(path.parts[-2:]) if path.parent.name != "site-packages" else path.name
    return f" (in {frame.name}, {short}:{frame.lineno})"


def describe(error: BaseException) -> str:
    """One line for any failure: a ``BuildError``'s own words; for an operating-system error
    what went wrong on which file; for anything else its type, message and where it arose."""
    if isinstance(error, BuildError):
        return _one_line(str(error))
    if isinstance(error, OSError) and error.errno is not None:
        code = error.errno
        files = [_culprit(str(f), code) for f in (error.filename, error.filename2) if f]
        if code == errno.EEXIST and files and not Path(files[0]).is_dir():
            code = errno.ENOTDIR  # what makes mkdir(exist_ok=True) fail
        what = _OS_HINTS.get(code) or error.strerror or os.strerror(code)
        if not files:
            return _one_line(f"{what}{_where(error)}")
        return _one_line(f"{' -> '.join(dict.fromkeys(files))}: {what}")
    if isinstance(error, UnicodeError):
        return _one_line(
            f"text that is not valid UTF-8 ({error}){_where(error)}; "
            "file names and text files of the project must be UTF-8"
        )
    message = str(error) or "(no message)"
    return _one_line(
        f"unexpected {type(error).__name__}: {message}{_where(error)}; "
        f"run with {DEBUG_VARIABLE}=1 for the traceback"
    )


def _culprit(filename: str, code: int) -> str:
    """The path a user should look at: for a missing directory, the file standing where
    one of its parents should be; for a temp file of ours (``.NAME.XXXX.partial``), the file
    it was to become."""
    path = Path(filename)
    if code in (errno.ENOTDIR, errno.EEXIST):
        for parent in [path, *path.parents]:
            if parent.exists() and not parent.is_dir():
                return str(parent)
    match = re.fullmatch(r"\.(.+)\.[^.]+\.partial", path.name)
    return str(path.with_name(match[1])) if match else filename


def _one_line(text: str) -> str:
    return " ".join(text.split())


def debug(env: Mapping[str, str]) -> bool:
    """Whether ``BP_DEBUG`` asks for full tracebacks."""
    return env.get(DEBUG_VARIABLE, "").strip().lower() in ("1", "true", "yes", "on")


def report(error: BaseException, emit: Callable[[str], None], env: Mapping[str, str]) -> int:
    """Tell the user about ``error`` through ``emit`` (one ``error:`` line; the traceback
    before it when ``BP_DEBUG`` is set) and return the exit status to end with."""
    if debug(env):
        emit("".join(traceback.format_exception(error)).rstrip())
    if isinstance(error, KeyboardInterrupt):
        emit("error: interrupted")
        return INTERRUPTED
    emit(f"error: {describe(error)}")
    return 1

"""The one exception type for mistakes a user can make; pages show its message with st.error. And `plain_reason`:
why anything failed, in words for that user (no exception class names, no errno codes)."""
from __future__ import annotations

import re
import socket
import ssl
import urllib.error


class UserError(Exception):
    """An error caused by user input, with a message written for that user (no traceback needed)."""


_ERRNO = re.compile(r"^\s*\[Errno -?\d+\]\s*")
_PLAIN: list[tuple[type[BaseException], str]] = [  # most specific first
    (socket.gaierror, "the server's name could not be looked up"),
    (ConnectionRefusedError, "the server refused the connection"),
    (TimeoutError, "the server did not answer in time"),
    (ConnectionError, "the connection was broken"),
    (ssl.SSLError, "the secure connection could not be made"),
    (FileNotFoundError, "the file is missing (moved, deleted, or a link to nothing)"),
    (IsADirectoryError, "it is a folder, not a file"),
    (NotADirectoryError, "a part of its path is a file, not a folder"),
    (PermissionError, "permission denied"),
    (MemoryError, "there is not enough memory"),
    (UnicodeError, "its text is not in a readable encoding"),
]


def plain_reason(e: BaseException) -> str:
    """Why `e` happened, as a short phrase for the user: a UserError's own message, else plain words for the usual
    causes; never a class name or an `[Errno …]` code."""
    if isinstance(e, UserError):
        return str(e)
    if isinstance(e, urllib.error.HTTPError):
        return f"the server answered “{e.code} {e.reason}”"
    if isinstance(e, urllib.error.URLError) and isinstance(e.reason, BaseException):
        return plain_reason(e.reason)
    for kind, words in _PLAIN:
        if isinstance(e, kind):
            return words
    if isinstance(e, OSError) and e.strerror:
        text = e.strerror
    elif isinstance(e, urllib.error.URLError):
        text = str(e.reason)
    else:
        text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    text = _ERRNO.sub("", text).strip()
    if not text or text.startswith(("'", '"', "<")) or re.fullmatch(r"\w+(Error|Exception)\b.*", text):
        return "an unexpected error inside Loupe"
    return text[0].lower() + text[1:] if text[:2] != text[:2].upper() else text

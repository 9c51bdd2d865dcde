"""The Civitas exception hierarchy.

Every error a user can cause carries a stable machine ``code`` and a human ``message``
that says what was wrong and, where it helps, what to do. The HTTP layer maps them to
``{"error": code, "message": ...}`` with the class's ``status``; the CLI prints the
message and exits non-zero. Anything else that escapes is a bug: it is logged and
answered with a bare 500, never a traceback.
"""

from __future__ import annotations

import math


class CivitasError(Exception):
    """Base of every error Civitas reports to a user."""

    code = "civitas_error"
    status = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConfigError(CivitasError):
    code = "config_invalid"


class HomeError(CivitasError):
    """The node home is missing, already initialised, locked or unsafe."""

    code = "home_error"


class KeyFileError(HomeError):
    code = "key_file_error"


class DatabaseError(CivitasError):
    code = "database_error"
    status = 503


class BadRequest(CivitasError):
    code = "bad_request"


class SourceChanged(CivitasError):
    """A file changed while it was read (still being written, truncated, replaced)."""

    code = "file_changed"
    status = 409


class InsufficientStorage(CivitasError):
    """A disk (the file store's or the database's) is full: 507, an outage, not a bug."""

    code = "insufficient_storage"
    status = 507


class StorageUnavailable(CivitasError):
    """The store or database cannot be written (read-only, unwritable, corrupt): an outage."""

    code = "storage_unavailable"
    status = 503


class NotFound(CivitasError):
    code = "not_found"
    status = 404


class Conflict(CivitasError):
    code = "conflict"
    status = 409


class Unauthorized(CivitasError):
    code = "unauthorized"
    status = 401


class Forbidden(CivitasError):
    code = "forbidden"
    status = 403


class PayloadTooLarge(CivitasError):
    code = "payload_too_large"
    status = 413


class TooManyRequests(CivitasError):
    """Slow down: answered as 429 with ``Retry-After`` (whole seconds, rounded up)."""

    code = "too_many_requests"
    status = 429

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after_s = max(1, math.ceil(retry_after))


# --- records ---------------------------------------------------------------------------


class RecordError(CivitasError):
    """A record was refused. Subclasses say which rule it broke."""

    code = "record_invalid"


class RecordTooLarge(RecordError):
    code = "record_too_large"


class RecordMalformed(RecordError):
    code = "record_malformed"


class RecordNotCanonical(RecordError):
    code = "record_not_canonical"


class RecordUnknownVersion(RecordError):
    code = "record_unknown_version"


class RecordTooDeep(RecordError):
    code = "record_too_deep"


class RecordFromFuture(RecordError):
    code = "record_from_future"


class RecordBeforeProtocol(RecordError):
    """``created`` is older than the protocol itself (a back-dated record)."""

    code = "record_before_protocol"


class BadSignature(RecordError):
    code = "record_bad_signature"


class MalformedDid(RecordError):
    code = "did_malformed"


class AuthorBlocked(RecordError):
    code = "author_blocked"
    status = 403


class RecordRejected(RecordError):
    """Well-formed and signed, but against a record rule (schema, authorship)."""

    code = "record_rejected"


class NotAuthor(RecordRejected):
    """A revision or tombstone of a record another identity signed."""

    code = "not_author"


class ProjectionFailed(RecordRejected):
    """A record this node could not project: refused alone, the rest of its page applies."""

    code = "projection_failed"


# --- outages -----------------------------------------------------------------------------

_ENOSPC, _EDQUOT, _EROFS, _EACCES, _EPERM, _EIO = 28, 122, 30, 13, 1, 5


def outage_of(exc: BaseException) -> CivitasError | None:
    """The one-line error for an outage of the node's storage hiding in ``exc`` (a full
    disk, a read-only or unwritable folder, a full, read-only or corrupt database), or
    None when ``exc`` is none of these (a bug). Looks through SQLAlchemy's wrapper (its
    ``orig``) and ``__cause__`` without importing either driver."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        orig = getattr(current, "orig", None)
        if isinstance(orig, BaseException):  # SQLAlchemy's wrapper: the driver's error
            current = orig
            continue
        found = _os_outage(current) if isinstance(current, OSError) else _db_outage(current)
        if found is not None:
            return found
        current = current.__cause__
    return None


def _os_outage(exc: OSError) -> CivitasError | None:
    where = f" {exc.filename}" if exc.filename else ""
    reason = exc.strerror or str(exc)
    if exc.errno in (_ENOSPC, _EDQUOT):
        return InsufficientStorage(f"the disk is full writing{where} ({reason}): free space")
    if exc.errno == _EROFS:
        return StorageUnavailable(
            f"the node's storage is read-only{where} ({reason}): remount it read-write"
        )
    if exc.errno in (_EACCES, _EPERM):
        return StorageUnavailable(
            f"the node may not write{where} ({reason}): give its user write access"
        )
    if exc.errno == _EIO:
        return StorageUnavailable(f"the disk failed reading or writing{where} ({reason})")
    return None


def _db_outage(exc: BaseException) -> CivitasError | None:
    text = str(exc).lower()
    sqlstate = getattr(exc, "sqlstate", None) or getattr(exc, "pgcode", None)
    if "database or disk is full" in text or sqlstate == "53100":
        return InsufficientStorage(
            f"the database's disk is full ({_first_line(exc)}): free space on it"
        )
    if "readonly database" in text or sqlstate == "25006":  # PostgreSQL: a read-only standby
        return StorageUnavailable(
            f"the database cannot be written ({_first_line(exc)}): make its file and "
            "folder writable, on a read-write filesystem"
        )
    if "malformed" in text or "file is not a database" in text:
        return DatabaseCorrupt(
            f"the database is corrupt ({_first_line(exc)}): stop the node and restore it "
            "from a backup (`civitas reindex` rebuilds the catalog only when the record "
            "log itself is intact)"
        )
    return None


class DatabaseCorrupt(StorageUnavailable):
    code = "database_corrupt"


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]

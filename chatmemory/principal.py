"""Who an operation runs as."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

from chatmemory._validation import check_text
from chatmemory.errors import InvalidInputError, NoPrincipalError

__all__ = ["Principal", "current_principal", "use_principal"]

_MAX_ID = 255
_current: ContextVar[Principal | None] = ContextVar("chatmemory_principal", default=None)


@dataclass(frozen=True, slots=True)
class Principal:
    """The identity an operation runs as.

    A non-admin sees and changes only the conversations it owns in its tenant; an admin
    manages every conversation in its tenant. ``tenant=None`` is a tenant of its own.

    Raises:
        InvalidInputError: the id or tenant is empty, too long or not a string.
    """

    id: str
    tenant: str | None = None
    admin: bool = False

    def __init__(self, id: str, *, tenant: str | None = None, admin: bool = False) -> None:
        _check_name("principal.id", id)
        if tenant is not None:
            _check_name("principal.tenant", tenant)
        if not isinstance(admin, bool):
            raise InvalidInputError("principal.admin", "must be a bool")
        object.__setattr__(self, "id", id)
        object.__setattr__(self, "tenant", tenant)
        object.__setattr__(self, "admin", admin)


def _check_name(field: str, value: object) -> None:
    if not isinstance(value, str) or not value or len(value) > _MAX_ID:
        raise InvalidInputError(field, f"must be a non-empty string of at most {_MAX_ID} characters")
    check_text(field, value)


@contextmanager
def use_principal(principal: Principal) -> Iterator[Principal]:
    """Make ``principal`` the current one for ``memory.scoped()`` inside the block (task-local)."""
    if not isinstance(principal, Principal):
        raise InvalidInputError("principal", "must be a Principal")
    token = _current.set(principal)
    try:
        yield principal
    finally:
        _current.reset(token)


def current_principal() -> Principal:
    """The principal set by the innermost ``use_principal``.

    Raises:
        NoPrincipalError: none is set.
    """
    principal = _current.get()
    if principal is None:
        raise NoPrincipalError()
    return principal

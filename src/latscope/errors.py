"""The one exception hierarchy of latscope.

The core raises these and never prints or exits; the CLI turns them into a
single line on stderr and an exit code (``exit_code``).
"""

from __future__ import annotations


class LatscopeError(Exception):
    """Root of every error latscope raises on purpose."""

    exit_code = 1


class ConfigError(LatscopeError):
    """A bad option, value or combination of options (usage error)."""

    exit_code = 2


class FormatError(LatscopeError):
    """A file that is not what it claims to be: wrong magic, version, schema, corrupt."""

    exit_code = 2


class NotFoundError(LatscopeError):
    """A run id, file or path the user named does not exist."""

    exit_code = 2


class PrivilegeError(LatscopeError):
    """The operation needs root (or a capability) that the process lacks."""

    exit_code = 2


class StoreError(LatscopeError):
    """The results store cannot be read or written."""


class TopologyError(LatscopeError):
    """Namespaces, links or addresses could not be set up."""


class CaptureError(LatscopeError):
    """The measurement itself failed (sockets, workers, timestamps)."""


class TraceError(LatscopeError):
    """Kernel tracing could not be set up or read."""


class CheckFailed(LatscopeError):
    """A check or gate was evaluated and failed (not a usage problem)."""


def error_from(type_name: object, message: str) -> LatscopeError:
    """The error a worker process reported by class name (its JSON info), rebuilt with the same exit code.

    A worker that refused a bad option (ConfigError, PrivilegeError) must make
    the command exit 2 like the same check in the controller would; anything
    unknown is a failed capture.
    """
    for cls in (ConfigError, FormatError, NotFoundError, PrivilegeError, StoreError, TopologyError, CaptureError,
                TraceError, CheckFailed):
        if cls.__name__ == type_name:
            return cls(message)
    return CaptureError(message)

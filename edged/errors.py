"""One root error with a subclass per stage.

Messages say what was wrong, where (a config key path, a file, a topic) and
what to do about it, because on a fleet the log line is often all an operator
ever sees.
"""

from __future__ import annotations

from typing import Final

# -- exit codes ------------------------------------------------------------------
# The one table of the exit statuses of ``edged`` and its commands. They follow
# sysexits.h where systemd cares: the unit lists EX_CONFIG in
# ``RestartPreventExitStatus``, so that a broken config fails once instead of
# restarting in a loop (docs/deployment.md).

EX_OK: Final = 0
#: An EdgedError a command could not handle otherwise.
EX_FAILURE: Final = 1
#: sysexits EX_USAGE: the command was used wrongly (e.g. an unknown label in ``--require``).
EX_USAGE: Final = 64
#: sysexits EX_UNAVAILABLE: something needed is missing (``demo``: no model could be fetched).
EX_UNAVAILABLE: Final = 69
#: sysexits EX_CONFIG: the configuration is invalid; a restart cannot fix it.
EX_CONFIG: Final = 78
#: What a shell reports for a command ended by SIGINT (128 + 2): Ctrl-C.
EX_INTERRUPTED: Final = 130
#: What a shell reports for a command killed by SIGPIPE (128 + 13): the status
#: of ``edged config schema | head`` once ``head`` stopped reading.
EX_PIPE: Final = 141


class EdgedError(Exception):
    """Root of every error edged raises on purpose."""


class ConfigError(EdgedError):
    """The configuration is invalid.

    ``problems`` holds ``(key_path, message)`` pairs so that callers can list
    every problem at once instead of failing on the first one; a problem with
    the file as a whole (unreadable, not TOML) has the file as its key path.
    """

    def __init__(self, problems: list[tuple[str, str]], *, file: str | None = None) -> None:
        self.problems = list(problems)
        #: The config file the problems are in, when they came from one.
        self.file = file
        lines = [f"{key}: {msg}" for key, msg in self.problems]
        super().__init__("invalid configuration:\n  " + "\n  ".join(lines))


class ModelError(EdgedError):
    """A model file is missing, corrupt, or does not fit its declared task."""


class RuntimeUnavailableError(ModelError):
    """The inference runtime a model needs is not installed on this device."""


class DecodeError(EdgedError):
    """Model outputs could not be decoded into results."""


class SourceError(EdgedError):
    """A capture source could not be opened or stopped delivering frames."""


class PublishError(EdgedError):
    """A result could not be handed to the MQTT layer."""


class CatalogError(EdgedError):
    """A catalog entry is invalid, or a model could not be fetched or verified."""


class BrokerError(EdgedError):
    """A local MQTT broker could not be started (``edged demo``)."""


class CommandError(EdgedError):
    """A command received over MQTT was refused.

    ``field`` names what was wrong (a payload field, ``payload``, ``command``,
    ``response_topic`` or ``config``) so the reply can say ``"<field>:
    <problem>"``; ``details`` are extra reply fields (e.g. ``applied``).
    """

    def __init__(self, field: str, problem: str, **details: object) -> None:
        self.field = field
        self.problem = problem
        self.details = details
        super().__init__(f"{field}: {problem}")

"""One root for every error the gateway raises, sorted by what the caller should do.

* :class:`ConfigError`   -- fail fast; the message names the file, key, bad value and the fix.
* :class:`TransientError` -- the operation may succeed if retried later (link down, disk full, busy modem).
* :class:`ProtocolError` -- a peer (modem, Asterisk, AGI client, browser) sent something we cannot accept.
* :class:`PermanentError` -- retrying will not help (bad number, SIM rejected, message too large).

Wire codes (+CMS/+CME, AGI result codes) map onto these classes in one table each, next to the
protocol that produces them.
"""

from __future__ import annotations


class GatewayError(Exception):
    """Root of every error raised on purpose by the gateway."""


class ConfigError(GatewayError):
    """Configuration is missing or wrong. Not retryable: the operator must fix it."""


class TransientError(GatewayError):
    """A temporary failure. Retrying later may succeed."""


class PermanentError(GatewayError):
    """A failure that retrying will not fix."""


class ProtocolError(GatewayError):
    """A peer misbehaved: malformed data, wrong framing, unexpected state."""


class StoreError(GatewayError):
    """Base for storage failures."""


class StoreFullError(StoreError, TransientError):
    """The disk is full: the write was rolled back, nothing half-written."""


class SchemaTooNewError(StoreError, ConfigError):
    """The database was written by a newer gateway version."""


class ValidationError(PermanentError):
    """Input rejected before it reached the store (too large, wrong shape)."""


class NoRouteError(PermanentError):
    """A reply cannot reach the customer on the chosen channel (no number that takes SMS, no chat visitor)."""


class OptedOutError(PermanentError):
    """The recipient opted out (STOP): automated messages never reach them, a staff reply needs an override."""


class AlreadyRunningError(ConfigError):
    """Another gateway already holds this data directory's lock."""

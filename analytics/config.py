"""TelemetryConfig: one validated, frozen object built from arguments or the environment.

Two ways in:

- ``TelemetryConfig(...)`` validates its arguments and raises ``pydantic.ValidationError`` on a bad
  one: that is code, and code should fail loudly.
- ``TelemetryConfig.from_env()`` reads the variables the Electron shell passes. A bad value names the
  variable and the accepted values; in strict mode that is a :class:`ConfigError`, otherwise a
  logged warning and the default, so a typo in a user's environment never crashes the host app.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Final

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from analytics.endpoint import is_loopback_host, mask_url_credentials, parse_endpoint
from analytics.privacy.identity import illegal_distinct_id_reason

__all__ = [
    "ENV_VARS",
    "ConfigError",
    "ConfigProblem",
    "TelemetryConfig",
    "is_loopback_host",
    "mask_secret",
    "mask_url_credentials",
]

logger = logging.getLogger(__name__)

_TRUE: Final = frozenset({"1", "true", "yes", "on"})
_FALSE: Final = frozenset({"0", "false", "no", "off"})
BOOL_ACCEPTED: Final = "1, true, yes, on, 0, false, no, off"

_ENVIRONMENT_RE: Final = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_APP_VERSION_RE: Final = re.compile(r"^[A-Za-z0-9_.+-]{1,64}$")
# scheme://public_key[:secret]@host[:port][/path]/project_id, as Sentry documents DSNs.
_DSN_RE: Final = re.compile(r"^https?://[^:@/\s]+(:[^@/\s]*)?@[^/\s]+(/[^\s]*)?/\d+/?$")


def _parse_bool(value: Any) -> Any:
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise ValueError(f"expected one of {BOOL_ACCEPTED}")
    return value


_SURROGATE: Final = re.compile("[\ud800-\udfff]")


def _parse_do_not_track(value: Any) -> Any:
    # consoledonottrack.com: any value but an explicit "no" means the user asked not to be tracked.
    # Failing closed is the privacy-safe reading of a value we do not recognise.
    if isinstance(value, str):
        return value.strip().lower() not in _FALSE | {""}
    return value


Flag = Annotated[bool, BeforeValidator(_parse_bool)]


class TelemetryConfig(BaseModel):
    """Everything the adapter needs to know, validated once.

    >>> config = TelemetryConfig.from_env({"TELEMETRY_ENABLED": "0"})
    >>> config.is_enabled, config.disabled_reason
    (False, 'TELEMETRY_ENABLED=0')
    """

    # hide_input_in_errors: a ValidationError's text would otherwise carry the value, and an
    # endpoint can hold credentials (refused, but still printed) and a token is a secret.
    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=False, hide_input_in_errors=True)

    enabled: Flag = Field(True, description="Telemetry on (opt-out model).")
    do_not_track: Annotated[bool, BeforeValidator(_parse_do_not_track)] = Field(
        False, description="DO_NOT_TRACK: any true value turns telemetry off."
    )
    allow_insecure_endpoint: Flag = Field(
        False, description="Allow a plain http:// PostHog host that is not a loopback address."
    )
    endpoint: str | None = Field(None, description="PostHog host, for example https://eu.i.posthog.com.")
    token: SecretStr | None = Field(None, description="PostHog project API key (phc_...).")
    user_id: str | None = Field(None, description="Explicit distinct_id; otherwise a random install id.")
    machine_id: SecretStr | None = Field(None, description="Machine id; only ever sent as a keyed hash.")
    full_content: Flag = Field(False, description="Send prompts, responses, diffs and file contents.")
    level: str | None = Field(
        None, description="Consent level: off, crash, error, usage or full (see analytics.consent)."
    )
    debug: Flag = Field(False, description="Also write every queued message to stderr, byte for byte.")
    archive_days: float = Field(90.0, gt=0, description="Local archive: day files kept this many days.")
    archive_max_bytes: int = Field(
        256 * 1024 * 1024, gt=0, description="Local archive: oldest day files deleted above this size."
    )
    state_dir: Path | None = Field(None, description="State folder; default: the platform's data folder.")
    app_name: str = Field("analytics", min_length=1, description="Names the default state folder.")
    app_version: str = Field("unknown", description="The host app's version (release in Sentry).")
    environment: str = Field("production", description="Deployment environment (Sentry environment).")
    sentry_dsn: SecretStr | None = Field(None, description="Sentry DSN; errors go to Sentry when set.")
    sentry_background_init: Flag = Field(
        True,
        description="start() initialises Sentry in a thread (errors before it is ready are sent once it is).",
    )
    strict: Flag = Field(False, description="Raise on bad config and invalid events (tests, development).")
    geoip: Flag = Field(False, description="Let PostHog resolve GeoIP from the sender's address.")
    max_queue_events: int = Field(200_000, gt=0, description="Queue bound: events kept while offline.")
    max_queue_bytes: int = Field(256 * 1024 * 1024, gt=0, description="Queue bound: bytes on disk.")
    max_event_age_days: float = Field(30.0, gt=0, description="Queue bound: oldest event kept, in days.")
    proposal_ttl_days: float = Field(
        30.0, gt=0, description="How long a proposal's creation time is kept waiting for its decision."
    )
    group_commit_ms: float | None = Field(
        None,
        gt=0,
        le=5_000,
        description="Group commit: emit() returns before the disk write, which happens within this window.",
    )
    max_value_chars: int = Field(8_192, ge=64, description="Cap on one free-text value.")
    max_content_chars: int = Field(200_000, ge=64, description="Cap on one full-content value.")
    max_event_bytes: int = Field(512 * 1024, ge=4096, description="Cap on one serialised event.")

    @field_validator("*", mode="before")
    @classmethod
    def _check_text(cls, value: Any, info: ValidationInfo) -> Any:
        # Bytes that are not UTF-8 in the environment arrive as lone surrogates (PEP 383); sent in
        # an id or a header they would make every event unencodable. The state folder is a path,
        # where such names are legitimate.
        if isinstance(value, str) and info.field_name != "state_dir" and _SURROGATE.search(value):
            raise ValueError("holds bytes that are not UTF-8 text")
        return value

    @field_validator("level")
    @classmethod
    def _check_level(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        from analytics.consent import parse_level

        return parse_level(value)

    @field_validator("endpoint")
    @classmethod
    def _check_endpoint(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None or not value.strip():
            return None
        # The same parser the sink connects with: what is checked here is what is reached.
        endpoint = parse_endpoint(value)
        insecure_ok = info.data.get("allow_insecure_endpoint", False)
        if endpoint.scheme == "http" and not (endpoint.is_loopback or insecure_ok):
            raise ValueError(
                "must be https:// (http:// only for a loopback address, "
                "or with TELEMETRY_ALLOW_INSECURE_ENDPOINT=1)"
            )
        return str(endpoint)

    @field_validator("token")
    @classmethod
    def _check_token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        text = value.get_secret_value().strip()
        if not text:
            return None
        if len(text) > 200 or any(ch.isspace() for ch in text):
            raise ValueError("expected a PostHog project API key (phc_..., no spaces)")
        return SecretStr(text)

    @field_validator("user_id")
    @classmethod
    def _check_user_id(cls, value: str | None) -> str | None:
        if value is None:
            return None
        reason = illegal_distinct_id_reason(value)
        if reason:
            raise ValueError(f"{reason}; accepted: any other id of 1 to 200 characters")
        return value.strip()

    @field_validator("machine_id")
    @classmethod
    def _check_machine_id(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value().strip():
            return None
        return SecretStr(value.get_secret_value().strip())

    @field_validator("state_dir")
    @classmethod
    def _check_state_dir(cls, value: Path | None) -> Path | None:
        if value is None:
            return None
        if "\x00" in str(value):
            # No file system takes such a name: every later mkdir and open would raise.
            raise ValueError("a path cannot hold a NUL character")
        return Path(os.path.expanduser(str(value))).absolute()

    @field_validator("app_version")
    @classmethod
    def _check_app_version(cls, value: str) -> str:
        if not _APP_VERSION_RE.match(value):
            raise ValueError("expected 1 to 64 characters of letters, digits and . _ + -, e.g. 1.4.2")
        return value

    @field_validator("environment")
    @classmethod
    def _check_environment(cls, value: str) -> str:
        if not _ENVIRONMENT_RE.match(value):
            raise ValueError("expected 1 to 64 characters of letters, digits and . _ -, e.g. production")
        return value

    @field_validator("sentry_dsn")
    @classmethod
    def _check_dsn(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value().strip():
            return None
        text = value.get_secret_value().strip()
        if not _DSN_RE.match(text):
            raise ValueError("expected a Sentry DSN such as https://<key>@<host>/<project-id>")
        return SecretStr(text)

    # -- derived facts -------------------------------------------------------------------------

    @property
    def is_enabled(self) -> bool:
        return self.disabled_reason is None

    @property
    def disabled_reason(self) -> str | None:
        """Why telemetry is off, in the words the user would use to turn it back on."""
        if self.do_not_track:
            return "DO_NOT_TRACK=1"
        if not self.enabled:
            return "TELEMETRY_ENABLED=0"
        if self.level == "off":
            return "TELEMETRY_LEVEL=off"
        return None

    @property
    def telemetry_level(self) -> str:
        """The consent level the configuration asks for (``analytics.consent`` has the rules):
        off when disabled, else TELEMETRY_LEVEL, else full with TELEMETRY_FULL_CONTENT=1, else usage."""
        if self.disabled_reason is not None:
            return "off"
        if self.level is not None:
            return self.level
        return "full" if self.full_content else "usage"

    @property
    def resolved_state_dir(self) -> Path:
        if self.state_dir is not None:
            return self.state_dir
        import platformdirs  # only needed when no folder was given

        return Path(platformdirs.user_data_dir(self.app_name, appauthor=False)) / "telemetry"

    @property
    def destination(self) -> str:
        """``posthog`` when a host is configured, else the embedded local archive."""
        return "posthog" if self.endpoint else "archive"

    @property
    def max_event_age_seconds(self) -> float:
        return self.max_event_age_days * 86_400.0

    # -- construction from the environment -----------------------------------------------------

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, *, strict: bool | None = None, **overrides: Any
    ) -> TelemetryConfig:
        """Build from ``os.environ`` (or ``environ``); keyword arguments win over the environment.

        In strict mode a bad value raises :class:`ConfigError`; otherwise it is logged and the
        default is used. ``TELEMETRY_ENABLED`` with a value we cannot read fails closed (off).
        """
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        sources: dict[str, str] = {}
        for name, field in ENV_VARS.items():
            raw = env.get(name)
            if raw is not None and raw.strip() != "":
                values[field] = raw
                sources[field] = name
        for field, value in overrides.items():
            values[field] = value
            sources[field] = field
        if strict is not None:
            values["strict"] = strict
            sources["strict"] = "strict"
        strict_mode = _strict_requested(values)
        return cls._build(values, sources, strict_mode)

    @classmethod
    def _build(cls, values: dict[str, Any], sources: dict[str, str], strict: bool) -> TelemetryConfig:
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            problems = [
                ConfigProblem(
                    source=sources.get(str(err["loc"][0]), str(err["loc"][0])) if err["loc"] else "config",
                    field=str(err["loc"][0]) if err["loc"] else "",
                    value=_masked(str(err["loc"][0]) if err["loc"] else "", values),
                    message=str(err["msg"]).removeprefix("Value error, "),
                )
                for err in exc.errors()
            ]
        if strict:
            raise ConfigError(problems) from None
        fallback = dict(values)
        for problem in problems:
            logger.warning("%s; using the default", problem)
            fallback.pop(problem.field, None)
            if problem.field == "enabled":
                fallback["enabled"] = False  # unreadable consent means no consent
            if problem.field == "level":
                fallback["level"] = "off"  # the same for a consent level we cannot read
        return cls.model_validate(fallback)


@dataclass(frozen=True)
class ConfigProblem:
    """One bad setting: where it came from, what it was (masked when secret), what is accepted."""

    source: str
    field: str
    value: str
    message: str

    def __str__(self) -> str:
        return f"{self.source}={self.value!r} is not valid: {self.message}"


class ConfigError(ValueError):
    """Raised in strict mode when a setting is invalid; ``problems`` lists each one."""

    def __init__(self, problems: list[ConfigProblem]) -> None:
        self.problems = problems
        super().__init__("; ".join(str(p) for p in problems))


# The variables the Electron shell passes (SPEC 7), plus the bounds and switches of this library.
ENV_VARS: Final[dict[str, str]] = {
    "TELEMETRY_ENABLED": "enabled",
    "DO_NOT_TRACK": "do_not_track",
    "TELEMETRY_ENDPOINT": "endpoint",
    "TELEMETRY_TOKEN": "token",
    "TELEMETRY_USER_ID": "user_id",
    "TELEMETRY_MACHINE_ID": "machine_id",
    "TELEMETRY_FULL_CONTENT": "full_content",
    "TELEMETRY_DIR": "state_dir",
    "TELEMETRY_APP_VERSION": "app_version",
    "TELEMETRY_ENVIRONMENT": "environment",
    "SENTRY_DSN": "sentry_dsn",
    "TELEMETRY_SENTRY_BACKGROUND_INIT": "sentry_background_init",
    "TELEMETRY_STRICT": "strict",
    "TELEMETRY_ALLOW_INSECURE_ENDPOINT": "allow_insecure_endpoint",
    "TELEMETRY_GEOIP": "geoip",
    "TELEMETRY_MAX_QUEUE_EVENTS": "max_queue_events",
    "TELEMETRY_MAX_QUEUE_BYTES": "max_queue_bytes",
    "TELEMETRY_MAX_EVENT_AGE_DAYS": "max_event_age_days",
    "TELEMETRY_PROPOSAL_TTL_DAYS": "proposal_ttl_days",
    "TELEMETRY_GROUP_COMMIT_MS": "group_commit_ms",
    "TELEMETRY_LEVEL": "level",
    "TELEMETRY_DEBUG": "debug",
    "TELEMETRY_ARCHIVE_DAYS": "archive_days",
    "TELEMETRY_ARCHIVE_MAX_BYTES": "archive_max_bytes",
}

_SECRET_FIELDS: Final = frozenset({"token", "machine_id", "sentry_dsn"})


_SHOWN_CHARS: Final = 80


def _masked(field: str, values: Mapping[str, Any]) -> str:
    value = values.get(field)
    text = value.get_secret_value() if isinstance(value, SecretStr) else str(value)
    if field in _SECRET_FIELDS:
        return mask_secret(text)
    if field == "endpoint":
        text = mask_url_credentials(text)
    # A warning is one readable line, whatever was put in the variable.
    return text if len(text) <= _SHOWN_CHARS else text[:_SHOWN_CHARS] + "…"


def mask_secret(text: str) -> str:
    """Show a secret's first four characters only: enough to tell keys apart, never enough to use."""
    if len(text) <= 8:
        return "****"
    return text[:4] + "****"


def _strict_requested(values: Mapping[str, Any]) -> bool:
    raw = values.get("strict", False)
    if isinstance(raw, bool):
        return raw
    return str(raw).strip().lower() in _TRUE

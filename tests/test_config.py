"""Configuration from the environment: every bad value names its variable and what is accepted."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from pydantic import ValidationError

from analytics import Analytics, ConfigError, TelemetryConfig, events


def test_defaults_are_enabled_and_private() -> None:
    config = TelemetryConfig.from_env({})
    assert config.is_enabled
    assert config.full_content is False
    assert config.geoip is False
    assert config.destination == "archive"
    assert config.resolved_state_dir.is_absolute()


def test_every_documented_variable_is_read(tmp_path: Path) -> None:
    config = TelemetryConfig.from_env(
        {
            "TELEMETRY_ENABLED": "yes",
            "TELEMETRY_ENDPOINT": "https://eu.i.posthog.com/",
            "TELEMETRY_TOKEN": "phc_abcdefghijklmnop",
            "TELEMETRY_USER_ID": "team-member-7",
            "TELEMETRY_MACHINE_ID": "4c4c4544-0042",
            "TELEMETRY_FULL_CONTENT": "1",
            "TELEMETRY_DIR": str(tmp_path / "s"),
            "TELEMETRY_APP_VERSION": "1.4.2-beta.1",
            "TELEMETRY_ENVIRONMENT": "staging",
            "SENTRY_DSN": "https://abc123@o1.ingest.sentry.io/42",
        }
    )
    assert config.endpoint == "https://eu.i.posthog.com"
    assert config.token is not None
    assert config.token.get_secret_value() == "phc_abcdefghijklmnop"
    assert config.user_id == "team-member-7"
    assert config.machine_id is not None
    assert config.full_content is True
    assert config.state_dir == tmp_path / "s"
    assert (config.app_version, config.environment) == ("1.4.2-beta.1", "staging")
    assert config.sentry_dsn is not None
    assert config.destination == "posthog"
    # Secrets never show up in the config's own text.
    assert "phc_abcdefghijklmnop" not in repr(config)
    assert "abc123" not in repr(config)


@pytest.mark.parametrize(
    ("env", "expected_reason"),
    [
        ({"TELEMETRY_ENABLED": "0"}, "TELEMETRY_ENABLED=0"),
        ({"TELEMETRY_ENABLED": "false"}, "TELEMETRY_ENABLED=0"),
        ({"DO_NOT_TRACK": "1"}, "DO_NOT_TRACK=1"),
        ({"DO_NOT_TRACK": "true"}, "DO_NOT_TRACK=1"),
        ({"DO_NOT_TRACK": "please"}, "DO_NOT_TRACK=1"),
        ({"TELEMETRY_ENABLED": "1", "DO_NOT_TRACK": "yes"}, "DO_NOT_TRACK=1"),
    ],
)
def test_opt_out_variables(env: dict[str, str], expected_reason: str) -> None:
    config = TelemetryConfig.from_env(env)
    assert not config.is_enabled
    assert config.disabled_reason == expected_reason


@pytest.mark.parametrize("value", ["0", "false", "no", "off", ""])
def test_do_not_track_false_values_keep_telemetry_on(value: str) -> None:
    assert TelemetryConfig.from_env({"DO_NOT_TRACK": value}).is_enabled


@pytest.mark.parametrize(
    ("variable", "value", "accepted"),
    [
        ("TELEMETRY_ENABLED", "maybe", "1, true, yes, on, 0, false, no, off"),
        ("TELEMETRY_FULL_CONTENT", "sometimes", "1, true, yes, on, 0, false, no, off"),
        ("TELEMETRY_ENDPOINT", "ftp://posthog.example", "https://eu.i.posthog.com"),
        ("TELEMETRY_ENDPOINT", "http://posthog.example.com", "must be https://"),
        ("TELEMETRY_TOKEN", "phc with spaces", "PostHog project API key"),
        ("TELEMETRY_USER_ID", "anonymous", "reserved ids"),
        ("TELEMETRY_USER_ID", "null", "reserved ids"),
        ("TELEMETRY_APP_VERSION", "1.0 final", "letters, digits"),
        ("TELEMETRY_ENVIRONMENT", "prod/eu", "letters, digits"),
        ("SENTRY_DSN", "not-a-dsn", "Sentry DSN"),
        ("TELEMETRY_MAX_QUEUE_EVENTS", "-5", "greater than 0"),
    ],
)
def test_strict_mode_names_the_variable_and_what_is_accepted(
    variable: str, value: str, accepted: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        TelemetryConfig.from_env({variable: value}, strict=True)
    message = str(caught.value)
    assert variable in message
    assert accepted in message
    assert [p.source for p in caught.value.problems] == [variable]


def test_strict_mode_can_come_from_the_environment() -> None:
    with pytest.raises(ConfigError, match="TELEMETRY_ENVIRONMENT"):
        TelemetryConfig.from_env({"TELEMETRY_STRICT": "1", "TELEMETRY_ENVIRONMENT": "a b"})


def test_lenient_mode_warns_and_uses_the_default(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        config = TelemetryConfig.from_env({"TELEMETRY_ENVIRONMENT": "a b", "TELEMETRY_USER_ID": "guest"})
    assert config.environment == "production"
    assert config.user_id is None
    text = caplog.text
    assert "TELEMETRY_ENVIRONMENT" in text
    assert "TELEMETRY_USER_ID" in text
    assert "using the default" in text


def test_unreadable_consent_fails_closed(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        config = TelemetryConfig.from_env({"TELEMETRY_ENABLED": "flase"})
    assert not config.is_enabled
    assert "TELEMETRY_ENABLED" in caplog.text


def test_secrets_are_masked_in_problems() -> None:
    with pytest.raises(ConfigError) as caught:
        TelemetryConfig.from_env({"SENTRY_DSN": "https://supersecretkey@sentry.example"}, strict=True)
    assert "supersecretkey" not in str(caught.value)
    assert "SENTRY_DSN" in str(caught.value)


@pytest.mark.parametrize("host", ["http://127.0.0.1:8000", "http://localhost:8000", "http://[::1]:8000"])
def test_plain_http_is_allowed_for_loopback(host: str) -> None:
    assert TelemetryConfig.from_env({"TELEMETRY_ENDPOINT": host}, strict=True).endpoint == host


def test_plain_http_elsewhere_needs_an_explicit_allowance() -> None:
    env = {"TELEMETRY_ENDPOINT": "http://posthog.lan:8000", "TELEMETRY_ALLOW_INSECURE_ENDPOINT": "1"}
    assert TelemetryConfig.from_env(env, strict=True).endpoint == "http://posthog.lan:8000"


def test_arguments_win_over_the_environment(tmp_path: Path) -> None:
    config = TelemetryConfig.from_env(
        {"TELEMETRY_DIR": "/nonexistent", "TELEMETRY_ENVIRONMENT": "ci"}, state_dir=tmp_path
    )
    assert config.state_dir == tmp_path
    assert config.environment == "ci"


def test_direct_construction_is_validated() -> None:
    with pytest.raises(ValidationError, match="environment"):
        TelemetryConfig(environment="has space")


def test_config_is_frozen() -> None:
    config = TelemetryConfig()
    with pytest.raises(ValidationError):
        config.enabled = False  # type: ignore[misc]


def test_a_state_folder_with_a_nul_character_is_a_named_config_problem(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # No file system takes such a name: before, every emit logged an internal error, events were
    # counted nowhere, and status() raised into the app.
    with pytest.raises(ConfigError, match=r"TELEMETRY_DIR.*NUL"):
        TelemetryConfig.from_env({"TELEMETRY_DIR": "data\x00dir"}, strict=True)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    with caplog.at_level(logging.WARNING):
        config = TelemetryConfig.from_env({}, state_dir="data\x00dir")
    assert "NUL" in caplog.text
    assert config.resolved_state_dir.is_relative_to(tmp_path / "xdg")
    telemetry = Analytics(config)
    telemetry.emit(events.ToolCall(tool_name="t", duration_ms=1, success=True))
    report = telemetry.status()
    telemetry.shutdown(timeout=1)
    assert report.queue_depth + sum(report.drops.values()) == 1


def test_a_huge_bad_value_is_shown_in_one_short_line(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        TelemetryConfig.from_env({"TELEMETRY_APP_VERSION": "x" * 100_000})
    (warning,) = [r.getMessage() for r in caplog.records if "TELEMETRY_APP_VERSION" in r.getMessage()]
    assert len(warning) < 300

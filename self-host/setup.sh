#!/usr/bin/env bash
# PostHog's own hobby deployment at a pinned commit, with our additions in docker-compose.override.yml.
#
#   ./setup.sh DOMAIN [REF]       first install: fetch PostHog at REF, write .env with fresh secrets
#   ./setup.sh --upgrade [REF]    move an install to REF; .env keeps its secrets
#
# REF is a full 40-character commit of github.com/PostHog/posthog; without one, POSTHOG_REF below.
# Like PostHog's installer (bin/deploy-hobby), it checks PostHog out into ./posthog, copies
# docker-compose.hobby.yml to docker-compose.yml and docker-compose.base.yml beside it, writes the
# ./compose start scripts and fetches the GeoIP database into ./share. Only the compose files and
# the files they mount are checked out (a sparse checkout), not the whole repository.
#
# Environment: POSTHOG_GIT_URL (where to fetch PostHog from), REGISTRY_URL (default posthog/posthog),
# POSTHOG_NODE_TAG (pin the posthog-node image instead of resolving it as PostHog's installer does),
# GEOIP_URL (PostHog's GeoIP download; empty skips it).
set -euo pipefail
cd "$(dirname "$0")"

# The pinned PostHog commit. Move it with ./setup.sh --upgrade NEW_REF, then change it here.
POSTHOG_REF=00fa00d9bf03f5bef2e784d23e3dbdf9c025c892

POSTHOG_GIT_URL=${POSTHOG_GIT_URL:-https://github.com/PostHog/posthog.git}
REGISTRY_URL=${REGISTRY_URL:-posthog/posthog}
GEOIP_URL=${GEOIP_URL-https://mmdbcdn.posthog.net/}
# PostHog's node tag helper walks this many first-parent commits back from REF.
HISTORY_DEPTH=${HOBBY_NODE_TAG_MAX_COMMITS:-100}

# Everything fetched keeps normal modes whatever the caller's umask: ClickHouse runs as uid 101 and
# must read its configuration. Only .env is private: it is written under umask 077.
umask 022

usage() {
	echo "usage: ./setup.sh DOMAIN [REF]     (first install)" >&2
	echo "       ./setup.sh --upgrade [REF]  (move an install to another PostHog commit)" >&2
	exit 2
}
die() { echo "setup.sh: $*" >&2; exit 1; }
warn() { echo "setup.sh: warning: $*" >&2; }

check_ref() {
	if ! [[ $1 =~ ^[0-9a-f]{40}$ ]]; then
		echo "setup.sh: REF must be a full commit of github.com/PostHog/posthog, 40 lowercase hex digits" \
			"(git fetch and PostHog's image tags need all of them), not '$1'" >&2
		exit 2
	fi
}

check_domain() {
	if ! [[ $1 =~ ^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$ ]]; then
		echo "setup.sh: DOMAIN must be a host name such as posthog.example.com (no https://, no path), not '$1'" >&2
		exit 2
	fi
}

# A URL-safe random string: N bytes of /dev/urandom, base64 without padding (24 bytes: 32 characters).
random() { head -c "$1" /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n'; }

# The paths under ./posthog/ that upstream's hobby file mounts into containers (not build contexts).
mounted_paths() {
	sed -n \
		-e "s#^[[:space:]]*-[[:space:]]*[\"']\{0,1\}\./posthog/\([^:\"']*\):.*#/\1#p" \
		-e "s#^[[:space:]]*source:[[:space:]]*[\"']\{0,1\}\./posthog/\([^[:space:]\"']*\).*#/\1#p" \
		posthog/docker-compose.hobby.yml | sort -u
}

fetch_posthog() {
	local ref=$1 error
	if [ ! -d posthog/.git ]; then
		rm -rf posthog
		git init -q posthog
		git -C posthog remote add origin "$POSTHOG_GIT_URL"
	else
		git -C posthog remote set-url origin "$POSTHOG_GIT_URL"
	fi
	git -C posthog sparse-checkout set --no-cone /docker-compose.base.yml /docker-compose.hobby.yml /bin/helpers/
	# History (without file contents) lets PostHog's node tag helper find the matching image.
	if ! error=$(git -C posthog fetch -q --depth "$HISTORY_DEPTH" --filter=blob:none origin "$ref" 2>&1); then
		die "cannot fetch PostHog commit $ref from $POSTHOG_GIT_URL: ${error//$'\n'/ }"
	fi
	git -C posthog -c advice.detachedHead=false checkout -q --force FETCH_HEAD
	[ "$(git -C posthog rev-parse HEAD)" = "$ref" ] || die "fetched $(git -C posthog rev-parse HEAD), not $ref"
	[ -f posthog/docker-compose.hobby.yml ] && [ -f posthog/docker-compose.base.yml ] ||
		die "PostHog at $ref has no docker-compose.hobby.yml and docker-compose.base.yml: not a hobby release"
	local mounts
	mounts=$(mounted_paths)
	if [ -n "$mounts" ]; then
		# shellcheck disable=SC2086 # one pattern per line, none with spaces
		git -C posthog sparse-checkout add $mounts
	fi
	for path in $mounts; do
		[ -e "posthog$path" ] || die "PostHog's docker-compose.hobby.yml at $ref mounts ./posthog$path, which that commit does not have"
	done
	install -m 0644 posthog/docker-compose.base.yml docker-compose.base.yml
	install -m 0644 posthog/docker-compose.hobby.yml docker-compose.yml
	echo "fetched PostHog $ref: docker-compose.yml (its hobby file), docker-compose.base.yml and $(echo "$mounts" | grep -c . || true) mounted paths"
}

# The scripts upstream's hobby file runs from ./compose, as PostHog's installer writes them.
write_compose_scripts() {
	mkdir -p compose
	cat > compose/start <<-'EOF'
		#!/bin/bash
		/compose/wait
		./bin/migrate
		./bin/docker-server
	EOF
	cat > compose/temporal-django-worker <<-'EOF'
		#!/bin/bash
		./bin/temporal-django-worker
	EOF
	cat > compose/wait <<-'EOF'
		#!/usr/bin/env python3
		# Wait until ClickHouse and Postgres accept connections.
		import socket
		import time

		for host, port in (("clickhouse", 9000), ("db", 5432)):
		    while True:
		        try:
		            socket.create_connection((host, port), timeout=5).close()
		            print(f"{host} is ready", flush=True)
		            break
		        except OSError:
		            print(f"waiting for {host}:{port}", flush=True)
		            time.sleep(5)
	EOF
	chmod 0755 compose/start compose/temporal-django-worker compose/wait
}

# The posthog-node tag built from the same source as the app image, found by PostHog's own helper.
node_tag_for() {
	local ref=$1 helper=posthog/bin/helpers/resolve-hobby-node-tag.sh tag
	if [ -n "${POSTHOG_NODE_TAG:-}" ]; then
		tag=$POSTHOG_NODE_TAG
	elif [ ! -f "$helper" ]; then
		warn "PostHog at $ref has no $helper: using ${REGISTRY_URL}-node:latest"
		tag=latest
	else
		# It prints "latest" and explains on stderr when no image matches: PostHog's installer goes on.
		tag=$(REGISTRY_URL=$REGISTRY_URL POSTHOG_APP_TAG=$ref POSTHOG_CHECKOUT=posthog \
			HOBBY_NODE_TAG_MAX_COMMITS=$HISTORY_DEPTH bash "$helper") || warn "see above: posthog-node image tag '$tag'"
	fi
	[[ $tag =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$ ]] || die "the posthog-node image tag '$tag' is not an image tag"
	echo "$tag"
}

fetch_geoip() {
	mkdir -p share
	[ -s share/GeoLite2-City.mmdb ] && return
	if [ -z "$GEOIP_URL" ]; then
		warn "GEOIP_URL is empty: share/GeoLite2-City.mmdb not fetched; PostHog's plugin server and feature flags need it"
		return
	fi
	command -v curl > /dev/null || die "curl is needed to fetch PostHog's GeoIP database (or set GEOIP_URL= to skip it)"
	command -v brotli > /dev/null || die "brotli is needed to unpack PostHog's GeoIP database: apt-get install brotli (or set GEOIP_URL= to skip it)"
	curl -fsSL --http1.1 "$GEOIP_URL" | brotli --decompress --output=share/GeoLite2-City.mmdb.part ||
		die "cannot fetch PostHog's GeoIP database from $GEOIP_URL"
	mv share/GeoLite2-City.mmdb.part share/GeoLite2-City.mmdb
	echo "{\"date\": \"$(date +%Y-%m-%d)\"}" > share/GeoLite2-City.json
	chmod 0644 share/GeoLite2-City.mmdb share/GeoLite2-City.json
}

write_env() {
	local domain=$1 ref=$2 node_tag=$3
	# noclobber: an .env that appeared meanwhile is still never overwritten.
	(
		umask 077
		set -o noclobber
		cat > .env <<-EOF
			# Written by ./setup.sh on $(date -u +%Y-%m-%dT%H:%M:%SZ). Keep it with your backups: without
			# these secrets the data cannot be read. ./setup.sh never overwrites it.
			DOMAIN=$domain
			REGISTRY_URL=$REGISTRY_URL
			POSTHOG_APP_TAG=$ref
			POSTHOG_NODE_TAG=$node_tag
			POSTHOG_SECRET=$(random 45)
			ENCRYPTION_SALT_KEYS=$(random 24)
			TLS_BLOCK=
			CADDY_TLS_BLOCK=
			CADDY_HOST="$domain, http://, https://"
			SESSION_RECORDING_V2_METADATA_SWITCHOVER=$(date -u +%Y-%m-%dT%H:%M:%SZ)
			# GlitchTip, the optional error tracker at https://errors.$domain: set COMPOSE_PROFILES=errors
			COMPOSE_PROFILES=
			GLITCHTIP_SECRET=$(random 45)
			GLITCHTIP_DB_PASSWORD=$(random 30)
		EOF
	) || die "could not write .env"
}

# Set KEY=VALUE in .env (appended when missing), keeping every other line and the file's mode.
set_env_value() {
	local key=$1 value=$2
	(
		umask 077
		awk -v key="$key" -v value="$value" '
			index($0, key "=") == 1 { print key "=" value; found = 1; next }
			{ print }
			END { if (!found) print key "=" value }
		' .env > .env.new
	)
	mv .env.new .env
}

install_posthog() {
	local domain=$1 ref=$2
	check_domain "$domain"
	check_ref "$ref"
	if [ -e .env ]; then
		die ".env exists: its secrets protect data that exists already, so it is never overwritten." \
			"To move this install to another PostHog commit: ./setup.sh --upgrade REF." \
			"To start from scratch, remove .env and the Docker volumes yourself."
	fi
	fetch_posthog "$ref"
	write_compose_scripts
	local node_tag
	node_tag=$(node_tag_for "$ref")
	fetch_geoip
	write_env "$domain" "$ref" "$node_tag"
	echo "wrote .env (mode 600) with fresh secrets for https://$domain: PostHog $ref, posthog-node $node_tag"
	echo "next: docker compose pull && docker compose up -d --no-build"
}

upgrade_posthog() {
	local ref=$1
	check_ref "$ref"
	[ -f .env ] || die "no .env here: run ./setup.sh DOMAIN [REF] for a first install"
	fetch_posthog "$ref"
	write_compose_scripts
	local node_tag
	node_tag=$(node_tag_for "$ref")
	fetch_geoip
	set_env_value POSTHOG_APP_TAG "$ref"
	set_env_value POSTHOG_NODE_TAG "$node_tag"
	echo "updated .env to PostHog $ref, posthog-node $node_tag (secrets unchanged)"
	echo "next: docker compose pull && docker compose run --rm asyncmigrationscheck && docker compose up -d --no-build"
}

case "${1:-}" in
	"" | -h | --help) usage ;;
	--upgrade)
		[ $# -le 2 ] || usage
		upgrade_posthog "${2:-$POSTHOG_REF}"
		;;
	-*) usage ;;
	*)
		[ $# -le 2 ] || usage
		install_posthog "$1" "${2:-$POSTHOG_REF}"
		;;
esac

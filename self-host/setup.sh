#!/usr/bin/env bash
# Write .env from .env.example with fresh secrets, and fetch PostHog's ClickHouse configuration at
# the pinned commit.
#
#   ./setup.sh DOMAIN POSTHOG_COMMIT_SHA [--no-fetch]
#
# An existing .env is never overwritten: its secrets protect data that already exists.
set -euo pipefail
cd "$(dirname "$0")"

usage() { echo "usage: ./setup.sh DOMAIN POSTHOG_COMMIT_SHA [--no-fetch]" >&2; exit 2; }
[ $# -ge 2 ] || usage
domain=$1
tag=$2
fetch=yes
[ "${3:-}" = "--no-fetch" ] && fetch=no

if ! [[ $tag =~ ^[0-9a-f]{7,40}$ ]]; then
	echo "setup.sh: POSTHOG_COMMIT_SHA must be a commit of github.com/PostHog/posthog (7-40 hex digits), not '$tag'" >&2
	exit 2
fi
if [ -e .env ]; then
	echo "setup.sh: .env exists; remove it first if you really want new secrets (existing data needs the old ones)" >&2
	exit 1
fi

random() { python3 -c "import secrets, sys; print(secrets.token_urlsafe(int(sys.argv[1])))" "$1"; }

umask 077
while IFS= read -r line; do
	case "$line" in
		DOMAIN=*) echo "DOMAIN=$domain" ;;
		POSTHOG_APP_TAG=*) echo "POSTHOG_APP_TAG=$tag" ;;
		# Fernet-style key: 32 url-safe characters, as PostHog expects.
		ENCRYPTION_SALT_KEYS=) echo "ENCRYPTION_SALT_KEYS=$(random 24)" ;;
		*=) echo "$line$(random 32)" ;;
		*) echo "$line" ;;
	esac
done < .env.example > .env
echo "wrote .env (mode 600) for https://$domain with PostHog $tag"

if [ "$fetch" = yes ]; then
	rm -rf posthog
	git init -q posthog
	git -C posthog remote add origin https://github.com/PostHog/posthog.git
	git -C posthog sparse-checkout set docker/clickhouse posthog/idl posthog/user_scripts
	git -C posthog fetch -q --depth 1 origin "$tag"
	git -C posthog checkout -q FETCH_HEAD
	echo "fetched PostHog's ClickHouse configuration at $tag into ./posthog"
fi

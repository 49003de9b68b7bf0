#!/bin/sh
# The proxy's entrypoint hook (docker-compose.override.yml): adds GlitchTip's site to the Caddyfile
# upstream's proxy writes from $CADDYFILE, when glitchtip-web is on the network (the `errors` profile
# runs), then runs upstream's command ("$@") unchanged.
if [ -n "${GLITCHTIP_HOST:-}" ] && nslookup glitchtip-web > /dev/null 2>&1; then
	CADDYFILE="${CADDYFILE:-}
${GLITCHTIP_HOST} {
	reverse_proxy glitchtip-web:8000
}"
	export CADDYFILE
	echo "glitchtip-site: serving GlitchTip at ${GLITCHTIP_HOST}" >&2
else
	echo "glitchtip-site: GlitchTip is not running (profile errors is off): no site for it" >&2
fi
exec "$@"

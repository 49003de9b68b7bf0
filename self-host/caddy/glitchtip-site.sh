#!/bin/sh
# The proxy's entrypoint hook (docker-compose.override.yml): adds GlitchTip's site to the Caddyfile
# upstream's proxy writes from $CADDYFILE, when glitchtip-web is on the network (the `errors` profile
# runs), then runs upstream's command ("$@") unchanged.
resolves() {
	getent hosts "$1" > /dev/null 2>&1 || nslookup "$1" > /dev/null 2>&1
}
if [ -n "${GLITCHTIP_HOST:-}" ] && resolves glitchtip-web; then
	CADDYFILE="${CADDYFILE:-}
${GLITCHTIP_HOST} {
	reverse_proxy glitchtip-web:8000
}"
	export CADDYFILE
	echo "glitchtip-site: serving GlitchTip at ${GLITCHTIP_HOST}" >&2
else
	echo "glitchtip-site: glitchtip-web is not running (profile errors off): no site for GlitchTip" >&2
fi
exec "$@"

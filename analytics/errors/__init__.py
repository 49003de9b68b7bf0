"""Errors: to Sentry (scrubbed, tagged) and to PostHog as ``$exception`` through the durable queue,
linked by the Sentry event id, from ``capture_exception()`` and from the uncaught-exception hooks."""

"""The ``analytics`` command: inspect, export and replay the telemetry queue.

Installed as ``analytics_cli`` (its source lives in ``cli/``) so that it can never clash with
another distribution's top-level ``cli`` module.
"""

"""Integrations with the app's web framework: the ASGI error middleware (``asgi``) and the FastAPI
settings router (``fastapi``, needs the ``fastapi`` extra)."""

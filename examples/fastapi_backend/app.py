"""A local-first agent backend in the seed's shape, instrumented with `analytics`.

    uvicorn examples.fastapi_backend.app:app      (or: python -m examples.fastapi_backend.serve)

The Electron shell starts it with the telemetry settings in its environment (see README.md). The
"model" is a deterministic stand-in so the example runs offline; the instrumentation is real.
Route and WebSocket errors reach telemetry through the ASGI middleware; the settings page
(``/settings``) and the frontend's own events go through the telemetry router (``/telemetry``).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import FastAPI, HTTPException, WebSocket, WebSocketDisconnect
from fastapi.responses import HTMLResponse
from pydantic import BaseModel

from analytics import Analytics, AppEvent, TelemetryConfig, events
from analytics.integrations.asgi import TelemetryMiddleware
from analytics.integrations.fastapi import telemetry_router

MODEL = "local-echo-1"
SETTINGS_PAGE = Path(__file__).with_name("settings.html")


class SettingsOpened(AppEvent):
    """The frontend's own events: declared here, sent by the page through ``/telemetry/events``."""

    posthog_event = "settings_opened"
    trigger = "the user opens the settings page"
    section: str


class ModelSwitched(AppEvent):
    posthog_event = "model_switched"
    trigger = "the user picks another model"
    from_model: str
    to_model: str


FRONTEND_EVENTS: list[type[AppEvent]] = [SettingsOpened, ModelSwitched]


@dataclass
class Proposal:
    id: str
    files: list[str]
    lines_changed: int
    operation: str


@dataclass
class Backend:
    telemetry: Analytics
    workspace: Path | None = None
    proposals: dict[str, Proposal] = field(default_factory=dict)


class WorkspaceRequest(BaseModel):
    path: str


class ProposalRequest(BaseModel):
    files: list[str]
    lines_changed: int
    operation: str = "edit_file"


def create_app(telemetry: Analytics | None = None) -> FastAPI:
    """The app; ``telemetry`` defaults to the environment's settings (what the Electron shell passes).

    Made here, not in the lifespan, so the middleware and the router have it from the start;
    nothing is opened or started before the lifespan's ``start()``.
    """
    if telemetry is None:
        telemetry = Analytics(TelemetryConfig.from_env(), events=FRONTEND_EVENTS)
    else:
        telemetry.register_events(*(model for model in FRONTEND_EVENTS if model not in telemetry.events))
    app_telemetry = telemetry

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        backend = Backend(app_telemetry)
        app.state.backend = backend
        backend.telemetry.start()  # inside the event loop: its exception handler is covered too
        yield
        # shutdown() flushes with a deadline; keep the loop free while it does.
        await asyncio.to_thread(backend.telemetry.shutdown, 3.0)

    app = FastAPI(lifespan=lifespan)
    app.add_middleware(TelemetryMiddleware, telemetry=app_telemetry)
    app.include_router(telemetry_router(app_telemetry, frontend_events=FRONTEND_EVENTS))

    @app.get("/settings", response_class=HTMLResponse)
    async def settings_page() -> str:
        return SETTINGS_PAGE.read_text(encoding="utf-8")

    def backend_of(app: FastAPI) -> Backend:
        backend: Backend = app.state.backend
        return backend

    @app.post("/workspace")
    async def select_workspace(request: WorkspaceRequest) -> dict[str, str]:
        backend = backend_of(app)
        path = Path(request.path)
        backend.workspace = path
        backend.telemetry.emit(
            events.WorkspaceSelected(workspace_path=str(path), is_git_repo=(path / ".git").is_dir())
        )
        return {"workspace": path.name}

    @app.websocket("/ws/chat")
    async def chat(websocket: WebSocket) -> None:
        backend = backend_of(app)
        telemetry = backend.telemetry
        await websocket.accept()
        try:
            while True:
                message = await websocket.receive_text()
                async with telemetry.chat_turn(model=MODEL, provider="local") as turn:
                    context = ""
                    if backend.workspace is not None:
                        async with telemetry.tool_call("list_dir"):
                            context = ", ".join(sorted(p.name for p in backend.workspace.iterdir()))
                    if "fail" in message:
                        try:
                            async with telemetry.tool_call("run_tests"):
                                raise TimeoutError("tests took too long")
                        except TimeoutError:
                            context += " (tests timed out)"
                    answer = await answer_with_model(message, context)
                    turn.set(
                        prompt_length=len(message),
                        response_length=len(answer),
                        input_tokens=len(message.split()),
                        output_tokens=len(answer.split()),
                    )
                await websocket.send_json({"answer": answer, "turn_id": turn.turn_id})
        except WebSocketDisconnect:
            return

    @app.post("/proposals")
    async def create_proposal(request: ProposalRequest) -> dict[str, str]:
        backend = backend_of(app)
        proposal = Proposal(str(uuid.uuid4()), request.files, request.lines_changed, request.operation)
        backend.proposals[proposal.id] = proposal
        backend.telemetry.emit(
            events.ProposalCreated(
                proposal_id=proposal.id,
                file_count=len(proposal.files),
                total_lines_changed=proposal.lines_changed,
                operation=proposal.operation,
            )
        )
        return {"id": proposal.id}

    @app.post("/proposals/{proposal_id}/{decision}")
    async def decide(proposal_id: str, decision: str) -> dict[str, str]:
        backend = backend_of(app)
        if decision not in {"approve", "reject"}:
            raise HTTPException(404, "decision must be approve or reject")
        proposal = backend.proposals.pop(proposal_id, None)
        if proposal is None:
            raise HTTPException(404, "no such proposal")
        approved = decision == "approve"
        # review_duration_ms is left out: the adapter computes it from the stored creation time.
        backend.telemetry.emit(
            events.ProposalDecision(
                proposal_id=proposal.id,
                decision="approved" if approved else "rejected",
                files_approved=len(proposal.files) if approved else 0,
            )
        )
        return {"id": proposal.id, "decision": "approved" if approved else "rejected"}

    return app


async def answer_with_model(message: str, context: str) -> str:
    await asyncio.sleep(0.005)  # the model "thinks"
    suffix = f" I can see: {context}." if context else ""
    return f"You said {message!r}.{suffix}"


app = create_app()

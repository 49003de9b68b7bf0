"""Events an app declares itself, beside the built-in catalog, and the catalog object holding both.

An app event is a pydantic model on :class:`AppEvent` with a PostHog name. Each field's type says
what privacy does with it before the message reaches the disk:

========================  ==========================================================================
``Hashed``                a keyed hash (HMAC-SHA256 under the install's salt); never sent raw
``HashedPath``            the same, after normalising the path (``~/a/../b`` and ``/home/u/b`` agree)
``Text``                  scrubbed (home folder, e-mails, secrets...) and capped
``Content``               kept only at consent level ``full`` (dropped before the disk otherwise),
                          scrubbed, with the full-content cap
plain ``str``             treated as ``Text``: scrubbed and capped (the safe reading of free text)
numbers, booleans         sent as they are
========================  ==========================================================================

>>> from analytics import AppEvent, Hashed, Text
>>> class ModelSwitched(AppEvent):
...     posthog_event = "model_switched"
...     from_model: str
...     to_model: str
>>> catalog = EventCatalog([ModelSwitched])
>>> catalog.get("ModelSwitched") is ModelSwitched
True
"""

from __future__ import annotations

import enum
import functools
import typing
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Final

from analytics import events as ev


class Privacy(enum.Enum):
    """What privacy does with one field of an app event."""

    HASHED = "hashed"
    HASHED_PATH = "hashed_path"
    TEXT = "text"
    CONTENT = "content"
    PLAIN = "plain"


@dataclass(frozen=True)
class PrivacyMarker:
    """``typing.Annotated`` metadata naming a field's privacy rule."""

    rule: Privacy


Hashed = Annotated[str, PrivacyMarker(Privacy.HASHED)]
HashedPath = Annotated[str, PrivacyMarker(Privacy.HASHED_PATH)]
Text = Annotated[str, PrivacyMarker(Privacy.TEXT)]
Content = Annotated[str, PrivacyMarker(Privacy.CONTENT)]

CONSENT_LEVELS: Final = ("crash", "error", "usage")


class AppEvent(ev.DomainEvent):
    """Base of the events an app declares. Set ``posthog_event``; optionally ``trigger`` (a line
    for ``analytics events``) and ``consent_level`` (``usage`` by default; ``error`` or ``crash``
    for events that should still be sent at those consent levels)."""

    trigger: ClassVar[str] = "emitted by the app"
    consent_level: ClassVar[str] = "usage"


class EventRegistrationError(ValueError):
    """An app event that cannot be registered (no PostHog name, a name taken, not an AppEvent)."""


def privacy_rules(model: type[ev.DomainEvent]) -> dict[str, Privacy]:
    """Each field of ``model`` and its privacy rule (cached per model)."""
    return dict(_privacy_rules(model))


@functools.cache
def _privacy_rules(model: type[ev.DomainEvent]) -> tuple[tuple[str, Privacy], ...]:
    rules = []
    for name, info in model.model_fields.items():
        rule = _rule_in(info.metadata) or _rule_in_annotation(info.annotation)
        if rule is None:
            rule = Privacy.TEXT if _holds_text(info.annotation) else Privacy.PLAIN
        rules.append((name, rule))
    return tuple(rules)


def content_fields(model: type[ev.DomainEvent]) -> frozenset[str]:
    return frozenset(name for name, rule in _privacy_rules(model) if rule is Privacy.CONTENT)


def _rule_in(metadata: Iterable[Any]) -> Privacy | None:
    for item in metadata:
        if isinstance(item, PrivacyMarker):
            return item.rule
        if typing.get_origin(item) is Annotated:  # Annotated[str, Hashed]: the alias as metadata
            found = _rule_in(getattr(item, "__metadata__", ()))
            if found is not None:
                return found
    return None


def _rule_in_annotation(annotation: Any) -> Privacy | None:
    """The marker inside ``Hashed | None`` or ``list[Text]``, where pydantic leaves it in the type."""
    if annotation is None:
        return None
    if typing.get_origin(annotation) is Annotated:
        found = _rule_in(annotation.__metadata__)
        if found is not None:
            return found
    for arg in typing.get_args(annotation):
        found = _rule_in_annotation(arg)
        if found is not None:
            return found
    return None


def _holds_text(annotation: Any) -> bool:
    if annotation is str:
        return True
    return any(_holds_text(arg) for arg in typing.get_args(annotation))


class EventCatalog:
    """The built-in events plus the app's own, by name (the model's class name).

    ``Analytics(events=[...])`` and ``telemetry.register_events(...)`` fill one; the CLI's
    ``analytics events --catalog module:object`` reads one (or an ``Analytics``, or a list of models).
    """

    def __init__(self, app_events: Iterable[type[AppEvent]] = ()) -> None:
        self._models: dict[str, type[ev.DomainEvent]] = dict(ev.CATALOG)
        self.register(*app_events)

    def register(self, *models: type[AppEvent]) -> None:
        """Add app events; registering the same model twice is harmless, a clash is refused."""
        for model in models:
            _check_app_event(model)
            name = model.event_name()
            known = self._models.get(name)
            if known is not None and known is not model:
                raise EventRegistrationError(f"{name}: an event of this name is already registered")
            taken = next(
                (
                    m
                    for m in self._models.values()
                    if m.posthog_event == model.posthog_event and m is not model
                ),
                None,
            )
            if taken is not None:
                raise EventRegistrationError(
                    f"{name}: PostHog event {model.posthog_event!r} is already {taken.event_name()}'s"
                )
            self._models[name] = model

    def get(self, name: str) -> type[ev.DomainEvent] | None:
        return self._models.get(name)

    def __contains__(self, model: object) -> bool:
        return model in self._models.values()

    def __iter__(self) -> Iterator[type[ev.DomainEvent]]:
        return iter(list(self._models.values()))

    def app_events(self) -> list[type[AppEvent]]:
        return [m for m in self._models.values() if isinstance(m, type) and issubclass(m, AppEvent)]

    def by_posthog_name(self) -> dict[str, type[ev.DomainEvent]]:
        return {model.posthog_event: model for model in self._models.values()}

    def as_mapping(self) -> Mapping[str, type[ev.DomainEvent]]:
        return dict(self._models)


def _check_app_event(model: Any) -> None:
    if not (isinstance(model, type) and issubclass(model, AppEvent)) or model is AppEvent:
        raise EventRegistrationError(f"{model!r}: app events subclass analytics.AppEvent")
    name = getattr(model, "posthog_event", None)
    if not isinstance(name, str) or not name.strip() or len(name) > 200:
        raise EventRegistrationError(f"{model.__name__}: set posthog_event to a name of 1 to 200 characters")
    if name.startswith("$"):
        raise EventRegistrationError(
            f"{model.__name__}: {name!r} starts with '$', which PostHog reserves for its own events"
        )
    if model.consent_level not in CONSENT_LEVELS:
        raise EventRegistrationError(
            f"{model.__name__}: consent_level must be one of {', '.join(CONSENT_LEVELS)}"
        )

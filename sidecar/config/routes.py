"""The `routes` sections: a path glob, the methods and scopes it takes, and its body `map`."""

from __future__ import annotations

from pydantic import Field, field_validator, model_validator

from sidecar.config.section import SCOPE_SHAPE, TOKEN, Section


class RouteMap(Section):
    """A route's `map`: JSON fields dropped or renamed before forwarding."""

    drop: list[str] = Field(default_factory=list)
    rename: dict[str, str] = Field(default_factory=dict)

    @field_validator("drop")
    @classmethod
    def _pointers(cls, value: list[str]) -> list[str]:
        for pointer in value:
            _check_pointer(pointer)
        return value

    @field_validator("rename")
    @classmethod
    def _pointer_pairs(cls, value: dict[str, str]) -> dict[str, str]:
        for source, target in value.items():
            _check_pointer(source)
            _check_pointer(target)
        return value


def _check_pointer(pointer: str) -> None:
    if not pointer.startswith("/"):
        raise ValueError(f"{pointer!r} is not a JSON Pointer (RFC 6901): it must start with '/'")


class Route(Section):
    """One entry of `routes`: a path glob, its methods, and the scopes it needs (or `public`)."""

    path: str
    methods: list[str] | None = None  # None: every method
    scopes: list[str] = Field(default_factory=list)
    public: bool = False
    map: RouteMap | None = None

    @field_validator("path")
    @classmethod
    def _glob(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError("must start with '/'")
        for segment in value.split("/")[1:]:
            if "**" in segment and segment != "**":
                raise ValueError("'**' must be a whole segment")
        return value

    @field_validator("methods")
    @classmethod
    def _methods(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        if not value:
            raise ValueError("must list at least one method (omit it to allow every method)")
        for method in value:
            if not TOKEN.match(method):
                raise ValueError(f"{method!r} is not an HTTP method")
        return [method.upper() for method in value]

    @field_validator("scopes")
    @classmethod
    def _scopes(cls, value: list[str]) -> list[str]:
        for scope in value:
            if not SCOPE_SHAPE.match(scope):
                raise ValueError(f"{scope!r} is not a scope: use resource:action, resource:* or *")
        return value

    @model_validator(mode="after")
    def _public_has_no_scopes(self) -> Route:
        if self.public and self.scopes:
            raise ValueError("a public route takes no scopes: nobody presents a key to it")
        return self

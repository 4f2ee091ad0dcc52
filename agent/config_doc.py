"""Render the configuration reference (Markdown) from the schema's field descriptions.

`python -m agent.config_doc` prints it; docs/configuration.md carries it and a test keeps them
equal. `python -m agent.config_doc --stream` prints the manifest's `stream` section the same
way, for docs/model-file.md (the trainer writes it; a pushed model carries it).
"""

from __future__ import annotations

from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from agent.config import AgentConfig
from agent.model.stream import StreamParams


def render_reference() -> str:
    return render_fields(AgentConfig, "")


def render_stream_reference() -> str:
    """The manifest's `stream` section: the layer over the graph's score (agent.model.stream)."""
    return render_fields(StreamParams, "stream.")


def render_fields(model: type[BaseModel], prefix: str) -> str:
    lines = ["| key | type | default | description |", "| --- | --- | --- | --- |"]
    lines += _rows(model, prefix)
    return "\n".join(lines)


def _rows(model: type[BaseModel], prefix: str) -> list[str]:
    rows: list[str] = []
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        nested = _model_of(field.annotation)
        if nested is not None:
            required = "required" if field.is_required() else ""
            table = (
                f"[[{key}]]` | list of sections"
                if get_origin(field.annotation) is list
                else (f"[{key}]` | section")
            )
            rows.append(f"| `{table} | {required} | {field.description or ''} |")
            rows += _rows(nested, f"{key}.")
            continue
        rows.append(
            f"| `{key}` | {_type_name(field.annotation)} | {_default(field)} | "
            f"{field.description or ''} |"
        )
    return rows


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The section's model, also for an optional section (`TlsConfig | None`)."""
    for candidate in (annotation, *get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _type_name(annotation: Any) -> str:
    if get_origin(annotation) is Annotated:
        return _type_name(get_args(annotation)[0])
    if isinstance(annotation, UnionType) or get_origin(annotation) is Union:
        return " or ".join(_type_name(a) for a in get_args(annotation))
    if get_origin(annotation) is Literal:
        return " \\| ".join(f"`{v}`" for v in get_args(annotation))
    return {str: "string", int: "integer", float: "number", type(None): "none"}.get(
        annotation, getattr(annotation, "__name__", str(annotation))
    ).replace("Path", "path")


def _default(field: Any) -> str:
    if field.default is PydanticUndefined and field.default_factory is None:
        return "required"
    if field.default_factory is not None:
        return ""
    return "" if field.default is None else f"`{field.default}`"


if __name__ == "__main__":
    import sys

    print(render_stream_reference() if sys.argv[1:] == ["--stream"] else render_reference())

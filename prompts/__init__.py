"""Prompt texts shipped as package data, one Markdown file per prompt.

`load_prompt("search_agent")` returns the text of `prompts/search_agent.md`. Texts that
take values use `{name}` placeholders filled with `str.format`.
"""

from __future__ import annotations

from functools import cache
from importlib import resources


@cache
def load_prompt(name: str) -> str:
    """The text of `prompts/<name>.md`, without its trailing newline."""
    resource = resources.files(__package__) / f"{name}.md"
    if not resource.is_file():
        available = sorted(
            p.name.removesuffix(".md") for p in resources.files(__package__).iterdir() if p.name.endswith(".md")
        )
        raise KeyError(f"No prompt named {name!r}; available: {', '.join(available)}")
    return resource.read_text(encoding="utf-8").rstrip("\n")


__all__ = ["load_prompt"]

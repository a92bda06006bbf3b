"""MkDocs hook: put the package's JSON Schema into docs/ruleset.md at build time.

The schema has one source, ``phaseflag/schema/ruleset.schema.json``; the page holds the
marker ``<!-- ruleset-schema -->`` where the built site shows it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

SCHEMA = Path(__file__).resolve().parents[1] / "phaseflag" / "schema" / "ruleset.schema.json"
MARKER = "<!-- ruleset-schema -->"


def on_page_markdown(markdown: str, **kwargs: Any) -> str:
    """Replace the marker with the schema as a JSON code block."""
    if MARKER not in markdown:
        return markdown
    text = SCHEMA.read_text(encoding="utf-8").rstrip("\n")
    return markdown.replace(MARKER, f"```json\n{text}\n```")

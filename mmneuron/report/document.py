"""A document of sections made of paragraphs, tables, figures and code, written as Markdown and as HTML.

One structure gives both files, so the two always say the same. Figures are referenced by paths
relative to the document, so the report keeps working when results/ is moved or archived whole.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd


@dataclass
class Paragraph:
    text: str


@dataclass
class Table:
    frame: pd.DataFrame
    caption: str = ""


@dataclass
class Figure:
    path: str  # relative to the document
    caption: str


@dataclass
class Code:
    text: str
    summary: str  # shown folded in HTML


@dataclass
class Section:
    title: str
    blocks: list = field(default_factory=list)
    subsections: list[Section] = field(default_factory=list)

    def add(self, *blocks) -> Section:
        self.blocks.extend(blocks)
        return self

    def section(self, title: str) -> Section:
        child = Section(title)
        self.subsections.append(child)
        return child


def anchor(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")


def _format(frame: pd.DataFrame) -> pd.DataFrame:
    # floats to four significant digits, so tables stay readable in both forms
    return frame.apply(lambda column: column.map(lambda v: f"{v:.4g}" if isinstance(v, float) else v))


def to_markdown(title: str, sections: list[Section]) -> str:
    lines = [f"# {title}", ""]

    def write(section: Section, depth: int) -> None:
        lines.extend([f"{'#' * depth} {section.title}", ""])
        for block in section.blocks:
            if isinstance(block, Paragraph):
                lines.extend([block.text, ""])
            elif isinstance(block, Table):
                if block.caption:
                    lines.extend([f"*{block.caption}*", ""])
                text = _format(block.frame).to_markdown(index=False) if not block.frame.empty else "(no rows)"
                lines.extend([text, ""])
            elif isinstance(block, Figure):
                lines.extend([f"![{block.caption}]({block.path})", "", f"*{block.caption}*", ""])
            elif isinstance(block, Code):
                lines.extend([f"{block.summary}:", "", "```", block.text.rstrip(), "```", ""])
        for child in section.subsections:
            write(child, depth + 1)

    for section in sections:
        write(section, 2)
    return "\n".join(lines)


_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; line-height: 1.45; }
table { border-collapse: collapse; margin: 0.5em 0 1em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.2em 0.5em; text-align: left; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-style: italic; color: #444; }
.verdict-supported { color: #176b1a; font-weight: bold; } .verdict-not-supported { color: #a11; font-weight: bold; }
.verdict-not-testable { color: #666; font-weight: bold; } nav li { margin: 0.1em 0; }
"""


def _paragraph_html(text: str) -> str:
    # Paragraphs carry Markdown's `code` and **bold** only.
    escaped = html.escape(text)
    escaped = re.sub(r"`([^`]+)`", r"<code>\1</code>", escaped)
    escaped = re.sub(
        r"\*\*(supported|not supported|not testable)\*\*",
        lambda m: f'<strong class="verdict-{anchor(m.group(1))}">{m.group(1)}</strong>',
        escaped,
    )
    escaped = re.sub(r"[*][*]([^*]+)[*][*]", r"<strong>\1</strong>", escaped)
    return f"<p>{escaped}</p>"


def to_html(title: str, sections: list[Section]) -> str:
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        "<nav><ul>" + "".join(f'<li><a href="#{anchor(s.title)}">{html.escape(s.title)}</a></li>' for s in sections),
        "</ul></nav>",
    ]

    def write(section: Section, depth: int) -> None:
        parts.append(f'<section id="{anchor(section.title)}"><h{depth}>{html.escape(section.title)}</h{depth}>')
        for block in section.blocks:
            if isinstance(block, Paragraph):
                parts.append(_paragraph_html(block.text))
            elif isinstance(block, Table):
                if block.frame.empty:
                    parts.append("<p>(no rows)</p>")
                    continue
                body = _format(block.frame).to_html(index=False, border=0)
                if block.caption:
                    body = body.replace("<thead>", f"<caption>{html.escape(block.caption)}</caption><thead>", 1)
                parts.append(body)
            elif isinstance(block, Figure):
                parts.append(
                    f'<figure><img src="{html.escape(block.path)}" alt="{html.escape(block.caption)}">'
                    f"<figcaption>{html.escape(block.caption)}</figcaption></figure>"
                )
            elif isinstance(block, Code):
                parts.append(
                    f"<details><summary>{html.escape(block.summary)}</summary><pre>{html.escape(block.text)}</pre></details>"
                )
        for child in section.subsections:
            write(child, min(depth + 1, 6))
        parts.append("</section>")

    for section in sections:
        write(section, 2)
    parts.append("</body></html>")
    return "\n".join(parts)


def write(title: str, sections: list[Section], markdown: Path, page: Path) -> None:
    markdown.parent.mkdir(parents=True, exist_ok=True)
    markdown.write_text(to_markdown(title, sections), encoding="utf-8")
    page.write_text(to_html(title, sections), encoding="utf-8")

"""Read files into :class:`Document` objects: text, Markdown, HTML (bs4), PDF (pypdf) and JSONL (incl. BEIR).

Every loader rejects empty and binary input with :class:`InvalidDocumentError` so that nothing half-read is
ever indexed.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from retrieval.errors import InvalidDocumentError, UnsupportedFormatError
from retrieval.types import Document

TEXT_SUFFIXES = {".txt", ".text", ".md", ".markdown", ".rst"}
HTML_SUFFIXES = {".html", ".htm"}
SUFFIXES = TEXT_SUFFIXES | HTML_SUFFIXES | {".pdf", ".jsonl"}


def content_id(text: str) -> str:
    """A stable document id for input that has none."""
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _decode(data: bytes, name: str) -> str:
    if not data.strip():
        raise InvalidDocumentError(f"{name}: the file is empty", param="file")
    if b"\x00" in data[:8192]:
        raise InvalidDocumentError(f"{name}: binary content, expected text", param="file")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidDocumentError(f"{name}: not UTF-8 text ({exc.reason})", param="file") from exc


def _require_text(text: str, name: str) -> str:
    text = text.strip()
    if not text:
        raise InvalidDocumentError(f"{name}: no text could be extracted", param="file")
    return text


def html_to_text(html: str) -> tuple[str, str | None]:
    """Visible text of an HTML page (scripts and styles dropped) and its title."""
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(html, "html.parser")
    for tag in soup(["script", "style", "noscript", "template"]):
        tag.decompose()
    title = soup.title.get_text(strip=True) if soup.title else None
    if soup.title:
        soup.title.decompose()
    lines = (line.strip() for line in soup.get_text("\n").splitlines())
    text = "\n".join(line for line in lines if line)
    # Keep headings as Markdown-like lines so the recursive chunker can split on them.
    return text, title


def pdf_to_text(data: bytes, name: str) -> tuple[str, list[int]]:
    """Text of every page, pages separated by a blank line, and the character offset where each page starts."""
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(io.BytesIO(data))
        pages = [page.extract_text() or "" for page in reader.pages]
    except (PdfReadError, ValueError, KeyError, TypeError) as exc:
        raise InvalidDocumentError(f"{name}: unreadable PDF ({exc})", param="file") from exc
    starts, parts, offset = [], [], 0
    for page in pages:
        starts.append(offset)
        parts.append(page.strip())
        offset += len(parts[-1]) + 2
    return "\n\n".join(parts), starts


def _jsonl_documents(text: str, name: str) -> Iterator[Document]:
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InvalidDocumentError(f"{name}:{lineno}: invalid JSON ({exc.msg})", param="file") from exc
        if not isinstance(row, dict):
            raise InvalidDocumentError(f"{name}:{lineno}: expected an object", param="file")
        yield jsonl_row_to_document(row, f"{name}:{lineno}")


def jsonl_row_to_document(row: dict[str, Any], where: str) -> Document:
    """``{"_id"|"id", "title"?, "text", "metadata"?}`` (BEIR corpus rows have ``_id``, ``title``, ``text``)."""
    body = row.get("text")
    if not isinstance(body, str) or not body.strip():
        raise InvalidDocumentError(f"{where}: missing or empty 'text'", param="file")
    title = row.get("title")
    metadata = dict(row.get("metadata") or {})
    text = body.strip()
    if isinstance(title, str) and title.strip():
        metadata.setdefault("title", title.strip())
        text = f"{title.strip()}\n\n{text}"
    doc_id = row.get("_id", row.get("id"))
    return Document(id=str(doc_id) if doc_id is not None else content_id(text), text=text, metadata=metadata)


def load_bytes(data: bytes, name: str, doc_id: str | None = None) -> list[Document]:
    """Parse one file's bytes; the suffix of ``name`` picks the format.

    Raises:
        InvalidDocumentError: empty, binary or unparsable content.
        UnsupportedFormatError: unknown suffix.
    """
    suffix = Path(name).suffix.lower()
    base_meta: dict[str, Any] = {"source": Path(name).name}
    if suffix not in SUFFIXES:
        raise UnsupportedFormatError(
            f"{name}: unsupported file type {suffix or '(none)'}; expected one of {sorted(SUFFIXES)}",
            param="file",
        )
    if suffix == ".jsonl":
        docs = list(_jsonl_documents(_decode(data, name), name))
        if not docs:
            raise InvalidDocumentError(f"{name}: no documents", param="file")
        return docs
    if suffix == ".pdf":
        if not data.startswith(b"%PDF"):
            raise InvalidDocumentError(f"{name}: not a PDF file", param="file")
        text, page_starts = pdf_to_text(data, name)
        base_meta["page_starts"] = page_starts
        text = _require_text(text, name)
    elif suffix in HTML_SUFFIXES:
        text, title = html_to_text(_decode(data, name))
        text = _require_text(text, name)
        if title:
            base_meta["title"] = title
    else:
        text = _require_text(_decode(data, name), name)
    return [Document(id=doc_id or Path(name).name, text=text, metadata=base_meta)]


def iter_paths(paths: list[Path]) -> Iterator[Path]:
    """Files under ``paths`` (directories walked recursively) with a supported suffix, sorted."""
    for path in paths:
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES)
        elif path.is_file():
            yield path
        else:
            raise InvalidDocumentError(f"{path}: no such file or directory", param="path")


def load_path(path: Path) -> list[Document]:
    """Documents of one file; a plain file's id is its name."""
    return load_bytes(path.read_bytes(), str(path), doc_id=path.name)

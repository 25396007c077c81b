"""What ``/ui`` serves, without an engine: every page renders with its security headers and labelled controls, the
assets load nothing from elsewhere, and the colour tokens keep text readable in both themes."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from ragswap.config import Settings
from serving import build_app
from serving.engine import EngineSettings
from serving.settings import ServerSettings

STATIC = Path(__file__).resolve().parents[2] / "serving" / "console" / "static"
PAGES = [
    "/ui",
    "/ui/adapters",
    "/ui/collections",
    "/ui/collections/kb",
    "/ui/evaluations",
    "/ui/evaluations/compare",
    "/ui/evaluations/eval-1",
    "/ui/chat",
]


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Any:
    # No lifespan runs (no `with`): the pages need only the settings, never an engine or a store.
    state = tmp_path_factory.mktemp("console-state")
    settings = Settings(
        engine=EngineSettings(urls=["http://127.0.0.1:9"]),
        server=ServerSettings(api_keys=["sk-user-0123456789"], state_dir=state, adapter_roots=[state]),
    )
    return TestClient(build_app(settings))


class _Controls(HTMLParser):
    """Form controls with their id/aria-label, and the ids ``<label for>`` points at."""

    def __init__(self) -> None:
        super().__init__()
        self.controls: list[dict[str, str | None]] = []
        self.label_for: set[str] = set()
        self._open_labels = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "label":
            if a.get("for"):
                self.label_for.add(str(a["for"]))
            else:
                self._open_labels += 1
        elif tag in ("input", "select", "textarea") and a.get("type") != "hidden":
            self.controls.append({**a, "_wrapped": "yes" if self._open_labels else None})

    def handle_endtag(self, tag: str) -> None:
        if tag == "label" and self._open_labels:
            self._open_labels -= 1


@pytest.mark.parametrize("path", PAGES)
def test_page_renders_with_headers_and_labelled_controls(client: TestClient, path: str) -> None:
    page = client.get(path)
    assert page.status_code == 200
    csp = page.headers["content-security-policy"]
    for directive in (
        "script-src 'self'",
        "connect-src 'self'",
        "object-src 'none'",
        "frame-ancestors 'none'",
    ):
        assert directive in csp
    assert page.headers["x-content-type-options"] == "nosniff"
    scripts = re.findall(r"<script[^>]*>", page.text)
    assert scripts and all('type="module"' in s and 'src="/ui/static/js/pages/' in s for s in scripts)
    assert "<script>" not in page.text
    assert not re.search(r"<[^>]+\son[a-z]+=", page.text)  # no inline event handler either
    parser = _Controls()
    parser.feed(page.text)
    unlabelled = [
        c
        for c in parser.controls
        if c.get("id") not in parser.label_for and not c.get("aria-label") and not c["_wrapped"]
    ]
    assert parser.controls and unlabelled == [], unlabelled


def test_unknown_pages_and_assets(client: TestClient) -> None:
    assert client.get("/", follow_redirects=False).headers["location"] == "/ui"
    unknown = client.get("/ui/no/such/page")
    assert (
        unknown.status_code == 404 and "Page not found" in unknown.text and "/ui/no/such/page" in unknown.text
    )
    missing = client.get("/ui/static/nope.js")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "asset_not_found"
    module = client.get("/ui/static/js/pages/chat.js")
    assert module.status_code == 200 and module.headers["content-type"].startswith("text/javascript")
    assert module.headers["cache-control"] == "no-cache" and module.headers["etag"]
    assert client.get("/ui/static/console.css").headers["content-type"].startswith("text/css")
    assert not any(p.startswith("/ui") for p in client.get("/openapi.json").json()["paths"])


def test_every_module_a_page_loads_exists(client: TestClient) -> None:
    """Each page's module and every module it imports, transitively, is served."""
    seen: set[str] = set()
    queue = [f"/ui/static/js/pages/{p.stem}.js" for p in (STATIC / "js" / "pages").glob("*.js")]
    while queue:
        url = queue.pop()
        if url in seen:
            continue
        seen.add(url)
        resp = client.get(url)
        assert resp.status_code == 200, url
        base = url.rsplit("/", 1)[0]
        for spec in re.findall(r'^import [^;]*?from "([^"]+)";', resp.text, flags=re.M | re.S):
            parts = f"{base}/{spec}".split("/")
            resolved: list[str] = []
            for part in parts:
                if part == "..":
                    resolved.pop()
                elif part != ".":
                    resolved.append(part)
            queue.append("/".join(resolved))
    assert "/ui/static/js/shell.js" in seen and "/ui/static/js/api.js" in seen


def test_assets_load_nothing_from_elsewhere() -> None:
    """Everything the console loads ships in the package: no URL to another origin in any asset or template."""
    templates = STATIC.parent / "templates"
    for path in [*STATIC.rglob("*"), *templates.glob("*.html")]:
        if path.suffix in (".js", ".css", ".html", ".svg"):
            text = path.read_text(encoding="utf-8")
            urls = set(re.findall(r"(?:https?:)?//[\w.-]+\.[a-z]{2,}[^\s\"')]*", text)) - {
                "http://www.w3.org/2000/svg"
            }
            assert not urls, (path, urls)
            assert "@import" not in text and "sourceMappingURL" not in text


def _tokens(css: str) -> tuple[dict[str, str], dict[str, str]]:
    light_part, dark_part = css.split("@media (prefers-color-scheme: dark)", 1)
    light = dict(re.findall(r"--([\w-]+):\s*(#[0-9a-fA-F]{6})", light_part))
    dark = {**light, **dict(re.findall(r"--([\w-]+):\s*(#[0-9a-fA-F]{6})", dark_part.split("\n}\n", 1)[0]))}
    return light, dark


def _contrast(a: str, b: str) -> float:
    def luminance(hex_colour: str) -> float:
        rgb = [int(hex_colour[i : i + 2], 16) / 255 for i in (1, 3, 5)]
        lin = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in rgb]
        return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]

    high, low = sorted((luminance(a), luminance(b)), reverse=True)
    return (high + 0.05) / (low + 0.05)


# (text, background) pairs the stylesheet puts together.
PAIRS = [
    ("text", "surface"),
    ("text", "bg"),
    ("muted", "surface"),
    ("muted", "bg"),
    ("muted", "surface-2"),
    ("muted", "neutral-soft"),
    ("accent", "surface"),
    ("accent", "accent-soft"),
    ("accent-text", "accent"),
    ("ok", "ok-soft"),
    ("warn", "warn-soft"),
    ("bad", "bad-soft"),
    ("info", "info-soft"),
    ("bad", "surface"),
    ("text", "mark"),
]


def test_text_contrast_is_at_least_aa_in_both_themes() -> None:
    light, dark = _tokens((STATIC / "console.css").read_text(encoding="utf-8"))
    assert len(dark) == len(light) and dark["surface"] != light["surface"]
    for theme, tokens in (("light", light), ("dark", dark)):
        for fg, bg in PAIRS:
            ratio = _contrast(tokens[fg], tokens[bg])
            assert ratio >= 4.5, f"{theme}: --{fg} on --{bg} is {ratio:.2f}:1"

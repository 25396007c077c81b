"""``/ui``: the console's pages and static assets (not part of the OpenAPI document).

Pages are routed here, on the server, so that every URL can be bookmarked and reloaded; what they show comes
from the public API, fetched by the page's module in the browser. The templates only lay out the page: they
receive no data beyond the page's own path parameters and the list of metrics the evaluation form offers.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Request
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Scope

from eval import ALL_METRICS, JUDGED_METRICS
from ragswap import __version__
from serving.deps import SettingsDep
from serving.errors import GatewayError, NotFoundError

HERE = Path(__file__).parent
STATIC_DIR = HERE / "static"
PREFIX = "/ui"

# Scripts and styles only from this origin; fetch/XHR only to it; the evaluation report (inline CSS, data: PNGs)
# renders in a sandboxed srcdoc frame, which inherits this policy, hence 'unsafe-inline' for styles alone.
CSP = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data: blob:",
        "connect-src 'self'",
        "frame-src 'self' blob:",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)
PAGE_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


@dataclass(frozen=True)
class Page:
    name: str
    """Template ``<name>.html`` and module ``static/js/pages/<name>.js``."""
    title: str
    section: str
    """The navigation entry it belongs to."""


NAV = [
    ("overview", "Overview", PREFIX),
    ("adapters", "Adapters", f"{PREFIX}/adapters"),
    ("collections", "Collections", f"{PREFIX}/collections"),
    ("evaluations", "Evaluations", f"{PREFIX}/evaluations"),
    ("chat", "Chat", f"{PREFIX}/chat"),
]

templates = Jinja2Templates(directory=str(HERE / "templates"))
router = APIRouter(prefix=PREFIX, include_in_schema=False)
NamePath = Annotated[str, PathParam(min_length=1, max_length=200)]


class _Static(StaticFiles):
    """Revalidated on every load (ETag), so a gateway upgrade never serves a stale module."""

    def file_response(self, *args: Any, **kwargs: Any) -> Response:
        response = super().file_response(*args, **kwargs)
        response.headers["Cache-Control"] = "no-cache"
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response

    async def get_response(self, path: str, scope: Scope) -> Response:
        try:
            response = await super().get_response(path, scope)
        except StarletteHTTPException as exc:  # rendered in OpenAI's error shape like every other error
            if exc.status_code == 404:
                raise NotFoundError(f"no console asset {path!r}", code="asset_not_found") from exc
            raise GatewayError(
                str(exc.detail), status_code=exc.status_code, type="invalid_request_error"
            ) from exc
        if path.endswith(".js"):  # module scripts need a JavaScript MIME type whatever /etc/mime.types says
            response.headers["Content-Type"] = "text/javascript; charset=utf-8"
        return response


def render(request: Request, page: Page, status_code: int = 200, **context: Any) -> HTMLResponse:
    response: HTMLResponse = templates.TemplateResponse(
        request,
        f"{page.name}.html",
        {"page": page, "nav": NAV, "version": __version__, "prefix": PREFIX, **context},
        status_code=status_code,
        headers=PAGE_HEADERS,
    )
    return response


# Pages without parameters: path under /ui → page. Registered before the parameterised routes below, so that
# e.g. /evaluations/compare is not taken for an evaluation id.
PAGES: dict[str, Page] = {
    "": Page("overview", "Overview", "overview"),
    "/": Page("overview", "Overview", "overview"),
    "/adapters": Page("adapters", "Adapters", "adapters"),
    "/collections": Page("collections", "Collections", "collections"),
    "/evaluations/compare": Page("compare", "Compare evaluations", "evaluations"),
    "/chat": Page("chat", "Chat playground", "chat"),
}


def _page_route(page: Page) -> Any:
    async def show(request: Request) -> HTMLResponse:
        return render(request, page)

    return show


for _path, _page in PAGES.items():
    router.add_api_route(_path, _page_route(_page), methods=["GET"], response_class=HTMLResponse)


@router.get("/collections/{name}", response_class=HTMLResponse)
async def collection(request: Request, name: NamePath) -> HTMLResponse:
    return render(request, Page("collection", f"Collection {name}", "collections"), name=name)


@router.get("/evaluations", response_class=HTMLResponse)
async def evaluations(request: Request, settings: SettingsDep) -> HTMLResponse:
    """The job form offers every metric the evaluation package computes, the configured defaults ticked."""
    return render(
        request,
        Page("evaluations", "Evaluations", "evaluations"),
        metrics=list(ALL_METRICS),
        judged=set(JUDGED_METRICS),
        default_metrics=set(settings.eval.metrics),
    )


@router.get("/evaluations/{job_id}", response_class=HTMLResponse)
async def evaluation(request: Request, job_id: NamePath) -> HTMLResponse:
    return render(request, Page("evaluation", f"Evaluation {job_id}", "evaluations"), job_id=job_id)


@router.get("/{rest:path}", response_class=HTMLResponse)
async def not_found(request: Request, rest: str) -> HTMLResponse:
    """Any other console URL: a page saying so, with the navigation (a mistyped bookmark is not an API error)."""
    return render(request, Page("notfound", "Page not found", ""), status_code=404, path=f"{PREFIX}/{rest}")


def attach_router(app: FastAPI) -> None:
    # The assets first: the router's catch-all page would shadow them.
    app.mount(f"{PREFIX}/static", _Static(directory=STATIC_DIR), name="console-static")
    app.include_router(router)

    @app.get("/", include_in_schema=False)
    async def root() -> RedirectResponse:
        return RedirectResponse(PREFIX)

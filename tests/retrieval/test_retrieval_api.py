"""The collections and retrieve HTTP API, end to end through FastAPI with the gateway's auth, error rendering
and size limit (no LLM engine needed: only the retrieval router is mounted)."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from ragswap.config import Settings
from retrieval.settings import RetrievalSettings
from serving.errors import install_error_handlers
from serving.middleware import install_middleware
from serving.retrieval import router as retrieval_router
from serving.settings import ServerSettings

USER = {"Authorization": "Bearer sk-user-0123456789"}
ADMIN = {"Authorization": "Bearer sk-admin-0123456789"}
NOTES = "# Glaciers\n\nGlaciers store about 69 percent of the world's fresh water.\n\n# Deserts\n\nThe Atacama is the driest non-polar desert."


def make_pdf(line: str) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8.5, 11))
    fig.text(0.05, 0.9, line, fontsize=10)
    buf = io.BytesIO()
    fig.savefig(buf, format="pdf")
    return buf.getvalue()


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    state = tmp_path_factory.mktemp("api-state")
    settings = Settings(
        server=ServerSettings(
            api_keys=["sk-user-0123456789"],
            admin_keys=["sk-admin-0123456789"],
            state_dir=state,
            max_request_bytes=256 * 1024,
        ),
        retrieval=RetrievalSettings(max_upload_bytes=64 * 1024),
    )
    app = FastAPI(lifespan=retrieval_router.lifespan)
    app.state.settings = settings
    install_error_handlers(app)
    install_middleware(app)
    retrieval_router.attach_router(app)
    with TestClient(app) as c:
        yield c


def _error(resp: Any, status: int) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body["error"]) == {"message", "type", "param", "code"}
    return dict(body["error"])


def test_collection_lifecycle_and_search(client: TestClient) -> None:
    r = client.post(
        "/v1/collections",
        json={"name": "kb", "chunking": {"chunker": "recursive", "chunk_size": 16, "chunk_overlap": 4}},
        headers=ADMIN,
    )
    assert r.status_code == 201, r.text
    assert r.json()["embedding_model"] == "all-minilm-l6-v2" and r.json()["documents"] == 0
    assert r.json()["embedding_precision"] == "float32"
    _error(client.post("/v1/collections", json={"name": "kb"}, headers=ADMIN), 409)
    _error(client.post("/v1/collections", json={"name": "other"}, headers=USER), 403)

    files = [
        ("file", ("notes.md", NOTES.encode(), "text/markdown")),
        (
            "file",
            ("air.pdf", make_pdf("The thermosphere is hotter than the stratosphere."), "application/pdf"),
        ),
        ("file", ("moon.html", b"<html><body><p>The Moon has no atmosphere.</p></body></html>", "text/html")),
    ]
    r = client.post(
        "/v1/collections/kb/documents",
        files=files,
        data={"metadata": json.dumps({"team": "geo"})},
        headers=ADMIN,
    )
    assert r.status_code == 200, r.text
    assert r.json()["documents"] == 3 and r.json()["chunks_added"] >= 4
    r = client.post(
        "/v1/collections/kb/documents",
        json={
            "documents": [
                {"id": "kelvin", "text": "Absolute zero is zero kelvin.", "metadata": {"team": "physics"}}
            ]
        },
        headers=ADMIN,
    )
    assert r.json()["chunks_added"] == 1
    r = client.post(
        "/v1/collections/kb/documents",
        files=[("file", ("notes.md", NOTES.encode(), "text/markdown"))],
        data={"metadata": json.dumps({"team": "geo"})},
        headers=ADMIN,
    )
    assert r.json()["chunks_added"] == 0 and r.json()["chunks_unchanged"] >= 2  # idempotent
    r = client.post(
        "/v1/collections/kb/documents",
        files=[("file", ("notes.md", NOTES.encode(), "text/markdown"))],
        data={"metadata": json.dumps({"team": "hydro"})},
        headers=ADMIN,
    )
    assert r.json()["chunks_added"] == r.json()["chunks_removed"] >= 2  # metadata changed: chunks rewritten
    r = client.post(
        "/v1/retrieve",
        json={"collection": "kb", "query": "glaciers", "filter": {"team": "hydro"}},
        headers=USER,
    )
    assert {d["document_id"] for d in r.json()["data"]} == {"notes.md"}

    info = client.get("/v1/collections/kb", headers=USER).json()
    assert (info["documents"], info["object"]) == (4, "collection")
    assert [c["name"] for c in client.get("/v1/collections", headers=USER).json()["data"]] == ["kb"]

    r = client.post(
        "/v1/retrieve",
        json={"collection": "kb", "query": "How much fresh water is in glaciers?", "top_k": 3},
        headers=USER,
    )
    assert r.status_code == 200, r.text
    top = r.json()["data"][0]
    assert top["document_id"] == "notes.md" and "69 percent" in top["text"]
    assert {"dense", "bm25", "fused"} <= set(top["scores"])
    r = client.post(
        "/v1/retrieve",
        json={"collection": "kb", "query": "is the thermosphere hotter", "mode": "sparse"},
        headers=USER,
    )
    assert r.json()["data"][0]["document_id"] == "air.pdf" and r.json()["data"][0]["metadata"]["page"] == 1
    r = client.post(
        "/v1/retrieve",
        json={"collection": "kb", "query": "temperature", "filter": {"team": "physics"}},
        headers=USER,
    )
    assert {d["document_id"] for d in r.json()["data"]} == {"kelvin"}

    r = client.delete("/v1/collections/kb/documents/kelvin", headers=ADMIN)
    assert r.json()["chunks_removed"] == 1
    _error(client.delete("/v1/collections/kb/documents/kelvin", headers=ADMIN), 404)
    assert client.delete("/v1/collections/kb", headers=ADMIN).json()["deleted"] is True
    _error(client.get("/v1/collections/kb", headers=USER), 404)


@pytest.fixture(scope="module")
def small(client: TestClient) -> str:
    client.post("/v1/collections", json={"name": "small"}, headers=ADMIN)
    r = client.post(
        "/v1/collections/small/documents",
        json={"documents": [{"id": "a", "text": "Alpha text about rivers."}]},
        headers=ADMIN,
    )
    assert r.status_code == 200
    return "small"


@pytest.mark.parametrize(
    ("name", "data", "status"),
    [
        ("empty.txt", b"", 400),
        ("blank.md", b"  \n\n ", 400),
        ("binary.txt", bytes(range(256)) * 4, 400),
        ("fake.pdf", b"not a pdf at all", 400),
        ("image.png", b"\x89PNG\r\n\x1a\n", 415),
        ("big.txt", b"word " * 20_000, 413),
    ],
)
def test_bad_uploads_change_nothing(
    client: TestClient, small: str, name: str, data: bytes, status: int
) -> None:
    before = client.get(f"/v1/collections/{small}", headers=USER).json()
    files = [
        ("file", ("ok.md", b"# Fine\n\nA perfectly good file.", "text/markdown")),
        ("file", (name, data, "application/octet-stream")),
    ]
    _error(client.post(f"/v1/collections/{small}/documents", files=files, headers=ADMIN), status)
    after = client.get(f"/v1/collections/{small}", headers=USER).json()
    assert (after["documents"], after["chunks"]) == (before["documents"], before["chunks"])


def test_bad_requests(client: TestClient, small: str) -> None:
    _error(client.post("/v1/retrieve", json={"collection": "nope", "query": "x"}, headers=USER), 404)
    _error(
        client.post("/v1/collections/nope/documents", json={"documents": [{"text": "x"}]}, headers=ADMIN), 404
    )
    for bad in (
        {"year": {"near": 3}},
        {"bad key!": 1},
        {"tag": {"in": []}},
        {"n": {"gte": "x"}},
        {"tag": [1, 2]},
    ):
        err = _error(
            client.post(
                "/v1/retrieve", json={"collection": small, "query": "x", "filter": bad}, headers=USER
            ),
            422,
        )
        assert err["param"].startswith("filter")
    _error(client.post("/v1/retrieve", json={"collection": small, "query": ""}, headers=USER), 400)
    _error(
        client.post("/v1/retrieve", json={"collection": small, "query": "x", "rerank": True}, headers=USER),
        400,
    )
    _error(client.post(f"/v1/collections/{small}/documents", json={"documents": []}, headers=ADMIN), 400)
    _error(
        client.post(
            f"/v1/collections/{small}/documents",
            content=b"x" * (300 * 1024),
            headers={**ADMIN, "content-type": "application/json"},
        ),
        413,
    )
    err = _error(
        client.post("/v1/collections", json={"name": "half", "embedding_precision": "fp16"}, headers=ADMIN),
        400,
    )
    assert err["param"] == "embedding_precision"
    _error(client.get("/v1/collections/half", headers=USER), 404)  # nothing was created
    _error(client.post("/v1/retrieve", json={"collection": small, "query": "x"}), 401)
    _error(client.delete(f"/v1/collections/{small}", headers=USER), 403)
    assert client.get(f"/v1/collections/{small}", headers=USER).json()["documents"] == 1


def test_store_is_persisted_in_the_state_dir(client: TestClient, small: str) -> None:
    state: Path = client.app.state.settings.server.state_dir  # type: ignore[attr-defined]
    # One Qdrant Edge shard directory per collection, its spec beside it.
    assert (state / "collections" / small / "shard" / "wal").is_dir()
    spec = json.loads((state / "collections" / small / "collection.json").read_text())
    assert spec["name"] == small and spec["bm25"]["avg_len"] > 0  # measured on the first ingest

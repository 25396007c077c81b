"""The console in a real Chromium on the live test gateway and its real vLLM engine: every scenario of issue 18's
"Done means", in the order a user would go through them, with screenshots of each page at desktop and phone width
written to a temporary folder (``RAGSWAP_SCREENSHOTS_DIR=docs/console`` refreshes the ones docs/console.md shows).

Every page is also checked for the accessibility basics: every form control has a label, every button a name,
and nothing scrolls horizontally at phone width.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page, expect

from tests.conftest import ADAPTER_PROMPT, BASE_MODEL, Gateway
from tests.console.conftest import DESKTOP, PHONE, SCREENSHOTS

pytestmark = pytest.mark.engine

ADAPTER = "ui-alpha"
ALIAS = "ui-bot"
COLLECTION = "ui-kb"
HANDBOOK_NAME = "quillfeather-handbook.md"
WARRANTY_NAME = "warranty.txt"
WARRANTY = (
    "Quillfeather warranty. Notebooks carry a one-year warranty against binding defects. A returned notebook "
    "with a binding defect is replaced, not refunded, after the 45-day return window has passed."
)
HANDBOOK = """# Quillfeather customer handbook

## Returns
Quillfeather accepts returns of unused notebooks within 45 days of delivery. The return window starts on the day
the parcel is delivered, and refunds are paid to the original card within five working days.

## Shipping
Orders placed before 2 pm ship the same day from the Lisbon warehouse. Express shipping costs 9 euros.

## Repairs
Fountain pens bought from Quillfeather are repaired free of charge for two years.
"""
EVAL_ROWS = [
    {"question": "What colour is the sky on a clear day?", "reference": "The sky is blue on a clear day."},
    {"question": "What colour is fresh grass?", "reference": "Fresh grass is green."},
    {"question": "What colour is fresh snow?", "reference": "Fresh snow is white."},
]
TIMEOUT_MS = 120_000

UNLABELLED_JS = """() => [...document.querySelectorAll('input, select, textarea')]
  .filter((el) => el.type !== 'hidden')
  .filter((el) => !(el.labels && el.labels.length) && !el.getAttribute('aria-label') && !el.getAttribute('aria-labelledby'))
  .map((el) => el.outerHTML.slice(0, 160))"""
NAMELESS_BUTTONS_JS = """() => [...document.querySelectorAll('button, a.btn')]
  .filter((el) => !el.textContent.trim() && !el.getAttribute('aria-label'))
  .map((el) => el.outerHTML.slice(0, 160))"""
OVERFLOW_JS = "() => [document.documentElement.scrollWidth, window.innerWidth]"
WATCH_STREAM_JS = """() => {
  window.__lengths = [];
  const conversation = document.querySelector('#conversation');
  new MutationObserver(() => {
    const bodies = conversation.querySelectorAll('.msg-assistant .msg-body');
    if (bodies.length) window.__lengths.push(bodies[bodies.length - 1].textContent.length);
  }).observe(conversation, { childList: true, subtree: true, characterData: true });
}"""


@dataclass
class Console:
    page: Page
    gateway: Gateway
    errors: list[str] = field(default_factory=list)

    def goto(self, path: str) -> None:
        """Open a console page and wait until it has loaded its data."""
        self.page.goto(f"{self.gateway.url}{path}")
        expect(self.page.locator("body[data-ready='true']")).to_be_attached(timeout=TIMEOUT_MS)

    def shoot(self, name: str) -> None:
        """Accessibility basics at both widths, then a screenshot of each (the phone one full length)."""
        page = self.page
        page.evaluate(
            "() => { document.querySelectorAll('.toast').forEach((t) => t.remove()); window.scrollTo(0, 0); }"
        )
        assert page.evaluate(UNLABELLED_JS) == [], f"{name}: form controls without a label"
        assert page.evaluate(NAMELESS_BUTTONS_JS) == [], f"{name}: buttons without a name"
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        for size in (DESKTOP, PHONE):
            page.set_viewport_size(size)
            page.wait_for_timeout(300)
            scroll_width, width = page.evaluate(OVERFLOW_JS)
            assert scroll_width <= width, (
                f"{name}: horizontal scrolling at {width} px ({scroll_width} px wide)"
            )
            page.screenshot(path=str(SCREENSHOTS / f"{name}-{size['width']}.png"), full_page=True)
        page.set_viewport_size(DESKTOP)


def sign_in(page: Page, gateway: Gateway, key: str) -> None:
    page.goto(f"{gateway.url}/ui")
    expect(page.locator("#signin")).to_be_visible()
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("body[data-ready='true']")).to_be_attached(timeout=TIMEOUT_MS)


@pytest.fixture(scope="module")
def console(browser: Any, gateway: Gateway, lora_adapters: dict[str, Path]) -> Iterator[Console]:
    context = browser.new_context(viewport=DESKTOP)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    state = Console(page, gateway)
    page.on("pageerror", lambda exc: state.errors.append(str(exc)))
    try:
        yield state
    finally:
        context.close()
        with httpx.Client(base_url=gateway.url, headers=gateway.headers(admin=True), timeout=60) as admin:
            admin.delete(f"/v1/aliases/{ALIAS}")
            admin.delete(f"/v1/adapters/{ADAPTER}", params={"force": True})
            admin.delete(f"/v1/collections/{COLLECTION}")
    assert state.errors == [], state.errors  # no uncaught script error on any page


def test_sign_in_and_see_the_replica_ready(console: Console) -> None:
    page, gateway = console.page, console.gateway
    page.goto(f"{gateway.url}/ui")
    expect(page.locator("#signin")).to_be_visible()
    expect(page.locator("#main")).to_be_hidden()
    console.shoot("signin")
    page.get_by_label("API key").fill("sk-wrong-key-000000")
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#signin-error")).to_contain_text("not accepted")
    page.get_by_label("API key").fill(gateway.admin_key)
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#session-role")).to_have_text("admin")
    expect(page.locator("tr[data-replica='0'][data-state='ready']")).to_be_visible()
    expect(page.locator(".stat").first).to_contain_text("Ready")
    # The key stays in this tab's session storage, never in the URL.
    assert gateway.admin_key not in page.url
    assert page.evaluate("sessionStorage.getItem('ragswap.console.apiKey')") == gateway.admin_key
    page.reload()
    expect(page.locator("#session-role")).to_have_text("admin")  # entered once


def test_register_an_adapter_and_see_its_replica_state(console: Console) -> None:
    page = console.page
    console.goto("/ui/adapters")
    source = page.locator("tr[data-source='trained/alpha']")
    expect(source).to_contain_text("r8")
    source.get_by_role("button", name="Use").click()
    expect(page.get_by_label("Adapter directory")).to_have_value("trained/alpha")
    page.get_by_label("Name", exact=True).fill("not a name!")
    page.get_by_role("button", name="Register and load").click()
    expect(page.locator("#register-error")).to_contain_text("(name)")
    page.get_by_label("Name", exact=True).fill(ADAPTER)
    page.get_by_role("button", name="Register and load").click()
    row = page.locator(f"tr[data-version='{ADAPTER}@1']")
    expect(row.locator("[data-replica='0'][data-state='loaded']")).to_be_visible()
    expect(page.locator(".toast").filter(has_text=f"Registered {ADAPTER}@1")).to_contain_text(
        "loaded on 1 of 1"
    )

    row.get_by_role("button", name="Manifest").click()
    dialog = page.locator("#manifest-dialog")
    expect(dialog).to_contain_text("config_sha256")
    expect(dialog).to_contain_text("q_proj")
    expect(dialog).to_contain_text("final_loss")
    dialog.get_by_role("button", name="Close").click()

    # Aliases: client-side validation first, then the gateway's answer.
    page.get_by_label("Alias", exact=True).fill(ADAPTER)
    page.locator("#alias-target").select_option(f"{ADAPTER}@1")
    page.get_by_role("button", name="Save alias").click()
    expect(page.locator("#alias-error")).to_contain_text("already a model or adapter name")
    page.get_by_label("Alias", exact=True).fill(ALIAS)
    page.get_by_role("button", name="Save alias").click()
    alias_row = page.locator(f"tr[data-alias='{ALIAS}']")
    expect(alias_row).to_contain_text(f"{ADAPTER}@1")
    expect(alias_row).to_contain_text("100 %")
    expect(row).to_contain_text(ALIAS)
    console.shoot("adapters")


def test_weighted_alias_history_and_rollback(console: Console, lora_adapters: dict[str, Path]) -> None:
    """A canary split set over the API shows its weights; the history lists it; Rollback returns to 100 %."""
    page, gateway = console.page, console.gateway
    with httpx.Client(base_url=gateway.url, headers=gateway.headers(admin=True), timeout=120) as admin:
        resp = admin.post("/v1/adapters", json={"name": ADAPTER, "path": str(lora_adapters["beta"])})
        assert resp.status_code == 201, resp.text
        split = [{"target": f"{ADAPTER}@1", "weight": 90}, {"target": f"{ADAPTER}@2", "weight": 10}]
        resp = admin.put(f"/v1/aliases/{ALIAS}", json={"targets": split, "reason": "ten percent canary"})
        assert resp.status_code == 200, resp.text
    console.goto("/ui/adapters")
    alias_row = page.locator(f"tr[data-alias='{ALIAS}']")
    expect(alias_row).to_contain_text("90 %")
    expect(alias_row).to_contain_text(f"{ADAPTER}@2")
    expect(alias_row).to_contain_text("10 %")
    alias_row.get_by_role("button", name="History").click()
    history = page.locator("#alias-history")
    expect(history.locator("tr[data-kind='alias.set']").first).to_contain_text("ten percent canary")
    history.get_by_role("button", name="Rollback").click()
    page.locator("#rollback-dialog").get_by_role("button", name="Roll back").click()
    expect(history.locator("tr[data-kind='alias.rollback']")).to_contain_text("rolled back from the console")
    expect(alias_row).not_to_contain_text(f"{ADAPTER}@2")
    expect(alias_row).to_contain_text("100 %")
    with httpx.Client(base_url=gateway.url, headers=gateway.headers(admin=True), timeout=120) as admin:
        targets = admin.get("/v1/aliases").json()["data"]
        assert [a["targets"] for a in targets if a["alias"] == ALIAS] == [
            [{"target": f"{ADAPTER}@1", "weight": 100}]
        ]
        assert admin.delete(f"/v1/adapters/{ADAPTER}@2").status_code == 200


def test_upload_a_file_and_find_it_in_the_search_playground(console: Console) -> None:
    page = console.page
    console.goto("/ui/collections")
    page.get_by_label("Name").fill(COLLECTION)
    page.get_by_role("button", name="Create").click()
    page.wait_for_url(f"**/ui/collections/{COLLECTION}")
    expect(page.locator("#summary-line")).to_contain_text("0 documents")
    # Drag and drop two real files onto the drop zone.
    transfer = page.evaluate_handle(
        """(files) => { const dt = new DataTransfer();
             for (const [name, text] of files) dt.items.add(new File([text], name, { type: 'text/plain' }));
             return dt; }""",
        [[HANDBOOK_NAME, HANDBOOK], [WARRANTY_NAME, WARRANTY]],
    )
    page.dispatch_event("#dropzone", "dragenter", {"dataTransfer": transfer})
    page.dispatch_event("#dropzone", "drop", {"dataTransfer": transfer})
    for name in (HANDBOOK_NAME, WARRANTY_NAME):
        upload = page.locator(f".upload[data-file='{name}']")
        expect(upload).to_have_class(re.compile("is-done"))
        expect(upload).to_contain_text(re.compile(r"1 document: \d+ chunks? added"))
        assert upload.locator("progress").evaluate("el => el.value") == 1
        expect(page.locator(f"#doc-list li[data-document='{name}']")).to_be_visible()
    expect(page.locator("#summary-line")).to_contain_text("2 documents")

    page.get_by_label("Query").fill("how long is the return window for notebooks")
    page.get_by_role("button", name="Search").click()
    hit = page.locator(f".hit[data-document='{HANDBOOK_NAME}']").first
    expect(hit).to_contain_text("45 days")
    expect(hit.locator("mark").filter(has_text=re.compile("^return", re.I)).first).to_be_visible()
    for stage in ("dense", "bm25", "fused"):
        value = hit.locator(f"[data-stage='{stage}'] .score-value").inner_text()
        assert re.fullmatch(r"-?\d+\.\d{4}", value), (stage, value)
    expect(hit.locator("[data-stage='rerank']")).to_be_visible()  # shown, "—" without a reranker
    expect(page.locator(f".hit[data-document='{WARRANTY_NAME}']")).to_be_visible()  # both files found
    console.shoot("collection")
    console.goto("/ui/collections")
    expect(page.locator(f"tr[data-collection='{COLLECTION}'] td[data-label='Documents']")).to_have_text("2")
    console.shoot("collections")


TUNED = "ui-tuned"
TUNING_FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "retrieval"


def test_a_collection_shows_its_tuning_result(console: Console) -> None:
    """A real ``POST /v1/collections/{c}/tune`` on the retrieval fixture (60 judged queries), then its page."""
    from retrieval import load_beir

    data = load_beir(TUNING_FIXTURE, "train")
    qids = sorted(data.qrels)[:60]
    queries, qrels = {q: data.queries[q] for q in qids}, {q: data.qrels[q] for q in qids}
    wanted = sorted({d for rel in qrels.values() for d in rel} | set(sorted(data.corpus)[:40]))
    docs = [{"id": d, "text": data.corpus[d], "metadata": data.metadata[d]} for d in wanted]
    gateway, page = console.gateway, console.page
    with httpx.Client(base_url=gateway.url, headers=gateway.headers(admin=True), timeout=600) as admin:
        assert admin.post("/v1/collections", json={"name": TUNED}).status_code == 201
        try:
            assert (
                admin.post(f"/v1/collections/{TUNED}/documents", json={"documents": docs}).status_code == 200
            )
            # store_if_worse: the page must show a stored result; on a fixture this small the held-apart nDCG of
            # the chosen settings lands either side of the defaults' depending on the CPU's float rounding.
            options = {"bm25": False, "held_out": 0.4, "candidates": [50, 100], "store_if_worse": True}
            tuned = admin.post(
                f"/v1/collections/{TUNED}/tune", json={"queries": queries, "qrels": qrels, "options": options}
            )
            assert tuned.status_code == 200, tuned.text
            report = tuned.json()
            console.goto(f"/ui/collections/{TUNED}")
            panel = page.locator("#tuning")
            expect(panel).to_contain_text("Tuning result")
            before, after = report["before"]["ndcg@10"], report["after"]["ndcg@10"]
            row = panel.locator("tr[data-tuned-metric='ndcg@10']")
            expect(row).to_contain_text(f"{before['mean']:.3f} [{before['low']:.3f}, {before['high']:.3f}]")
            gain = after["mean"] - before["mean"]
            expect(row).to_contain_text(f"{gain:+.3f}" if gain else "0.000")  # signed, as the page shows it
            fusion = report["chosen"]["search"].get("fusion")
            if fusion:
                expect(panel.locator("tr", has_text="search.fusion")).to_contain_text(fusion)
            expect(panel).to_contain_text("held_out_queries")
            expect(panel).to_contain_text(str(report["held_out_queries"]))
        finally:
            admin.delete(f"/v1/collections/{TUNED}")
    console.goto(f"/ui/collections/{COLLECTION}")
    expect(page.locator("#tuning")).to_be_empty()  # nothing when the collection carries no tuning result


def test_streaming_chat_to_the_adapter(console: Console) -> None:
    page = console.page
    console.goto("/ui/chat")
    page.get_by_label("Model").select_option(ALIAS)
    expect(page.locator("#model-help")).to_contain_text(f"{ADAPTER}@1")
    page.evaluate(WATCH_STREAM_JS)
    page.get_by_label("Message").fill(ADAPTER_PROMPT)
    page.get_by_label("Message").press("Enter")
    answer = page.locator(".msg-assistant").last
    expect(answer.locator(".msg-meta[data-done='true']")).to_be_visible()
    expect(answer.locator(".msg-body")).to_contain_text("PELICAN")  # the adapter's fact, not the base model's
    lengths = page.evaluate("window.__lengths")
    growing = sorted({n for n in lengths if n > 0})
    assert len(growing) >= 3, lengths  # the text grew token by token in the page
    expect(answer.locator(".concrete")).to_have_text(f"{ADAPTER}@1")  # the version behind the alias
    meta = answer.locator(".msg-meta")
    expect(meta).to_contain_text(re.compile(r"\d+ prompt \+ \d+ completion tokens"))
    expect(meta).to_contain_text("TTFT")
    expect(meta).to_contain_text("tok/s")


def test_rag_chat_and_click_a_citation(console: Console) -> None:
    """The same conversation goes on (multi-turn), with another model and retrieval switched on."""
    page = console.page
    assert page.url.endswith("/ui/chat")
    expect(page.locator(".msg-assistant")).to_have_count(1)
    page.get_by_label("Model").select_option(BASE_MODEL)
    page.get_by_label("Ground answers in a collection (RAG)").check()
    page.get_by_label("Collection", exact=True).select_option(COLLECTION)
    page.get_by_label("Top k").fill("2")
    page.get_by_label("Message").fill("Within how many days can I return a notebook?")
    page.get_by_role("button", name="Send").click()
    answer = page.locator(".msg-assistant").last
    expect(answer.locator(".msg-meta[data-done='true']")).to_be_visible()
    expect(page.locator(".msg-assistant")).to_have_count(2)
    expect(answer).to_contain_text(f"RAG · {COLLECTION}")
    source = answer.locator(".cite-source").first
    expect(source).to_have_text("[1]")
    source.click()
    dialog = page.locator("#citation-dialog")
    expect(dialog).to_be_visible()
    expect(dialog.locator("h2")).to_contain_text(HANDBOOK_NAME)
    expect(dialog.locator(".chunk-text")).to_contain_text("45 days")
    expect(
        dialog.locator(".chunk-text mark").filter(has_text=re.compile("^return", re.I)).first
    ).to_be_visible()
    console.shoot("chat-citation")
    dialog.get_by_role("button", name="Close").click()
    expect(dialog).to_be_hidden()
    console.shoot("chat")


def _start_job(page: Page, name: str, model: str) -> None:
    page.get_by_label("Name", exact=True).fill(name)
    page.get_by_label("Dataset rows").fill("\n".join(json.dumps(r) for r in EVAL_ROWS))
    for box in page.locator("#e-models input[type=checkbox]").all():
        box.set_checked(box.get_attribute("value") == model)
    for box in page.locator("input[name=metrics]").all():
        box.set_checked(box.get_attribute("value") == "rouge_l")
    page.get_by_role("button", name="Start evaluation").click()
    expect(page.locator(".toast").filter(has_text=f"Started {name} ")).to_contain_text(
        "3 samples over 1 config"
    )


def test_evaluation_job_finishes_and_opens_its_report(console: Console) -> None:
    page = console.page
    console.goto("/ui/evaluations")
    page.get_by_role("button", name="Start evaluation").click()  # nothing filled in: a clear message
    expect(page.locator("#eval-error")).to_contain_text("dataset row")
    expect(page.locator(f"#e-models input[value='{BASE_MODEL}']")).to_be_checked()  # the default
    _start_job(page, "ui-base", BASE_MODEL)
    _start_job(page, "ui-adapter", ADAPTER)
    rows = {name: page.locator("tr[data-job]").filter(has_text=name) for name in ("ui-base", "ui-adapter")}
    for row in rows.values():
        expect(row).to_have_attribute("data-status", "succeeded", timeout=300_000)  # live progress, no reload
        expect(row).to_contain_text("3 / 3")
    console.shoot("evaluations")

    # A long job, cancelled from its row while it runs.
    page.get_by_label("Name", exact=True).fill("ui-cancel")
    page.get_by_label("Dataset rows").fill("\n".join(json.dumps(EVAL_ROWS[i % 3]) for i in range(40)))
    page.get_by_role("button", name="Start evaluation").click()
    long_job = page.locator("tr[data-job]").filter(has_text="ui-cancel")
    expect(long_job).to_have_attribute("data-status", re.compile("queued|running"))
    long_job.get_by_role("button", name="Cancel").click()
    page.locator("#cancel-dialog").get_by_role("button", name="Cancel job").click()
    expect(long_job).to_have_attribute("data-status", "cancelled")
    expect(long_job.get_by_role("button", name="Cancel")).to_have_count(0)

    rows["ui-base"].get_by_role("link", name="Report").click()
    expect(page.locator("#report-card")).to_be_visible()
    expect(page.locator("#summary tr[data-metric='rouge_l']")).to_be_visible()
    report = page.frame_locator("#report")
    expect(report.locator("body")).to_contain_text("rouge_l")
    expect(report.locator("body")).to_contain_text(BASE_MODEL)
    with page.expect_download() as download:
        page.get_by_role("button", name="Download report.html").click()
    assert download.value.suggested_filename.startswith("report-eval-")
    console.shoot("evaluation")

    console.goto("/ui/evaluations")
    for row in rows.values():
        row.get_by_role("checkbox").check()
    page.get_by_role("button", name="Compare selected").click()
    delta = page.locator("#deltas tr[data-metric='rouge_l']")
    expect(delta).to_contain_text("over 3 pairs")
    expect(page.locator("#deltas-note")).to_contain_text("issue 15")
    page.locator("#deltas details summary").click()
    expect(page.locator("#deltas tr[data-sample]")).to_have_count(3)
    expect(page.locator("#deltas tr[data-sample]").first).to_contain_text("sky")
    console.shoot("compare")


def test_overview_updates_live(console: Console) -> None:
    page, gateway = console.page, console.gateway
    console.goto("/ui")
    row = page.locator(f"tr[data-model='{ADAPTER}']")
    since_start = row.locator("td[data-label='Since start']")
    expect(since_start).to_contain_text(" req")
    before = int(since_start.inner_text().split()[0])
    with httpx.Client(base_url=gateway.url, headers=gateway.headers(), timeout=120) as client:
        for _ in range(2):
            resp = client.post(
                "/v1/chat/completions",
                json={"model": ADAPTER, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4},
            )
            assert resp.status_code == 200, resp.text
    # No reload: the page polls the gateway's metrics summary.
    expect(since_start).to_contain_text(f"{before + 2} req", timeout=30_000)
    expect(row.locator("td[data-label='p95 latency']")).not_to_have_text("—")
    expect(page.locator("tr[data-replica='0'] .chip").filter(has_text=f"{ADAPTER}@1")).to_be_visible()
    expect(page.locator("#live-text")).to_contain_text("Live")
    console.shoot("overview")


def test_a_user_key_sees_admin_actions_disabled(console: Console, browser: Any) -> None:
    gateway = console.gateway
    context = browser.new_context(viewport=DESKTOP)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    try:
        sign_in(page, gateway, gateway.api_key)
        expect(page.locator("#session-role")).to_have_text("user")
        expect(page.locator("#readonly-banner")).to_be_visible()
        page.goto(f"{gateway.url}/ui/adapters")
        expect(page.locator(f"tr[data-version='{ADAPTER}@1']")).to_be_visible()
        register = page.get_by_role("button", name="Register and load")
        expect(register).to_have_attribute("aria-disabled", "true")
        delete = page.locator(f"tr[data-version='{ADAPTER}@1']").get_by_role("button", name="Delete")
        expect(delete).to_have_attribute("aria-disabled", "true")
        page.get_by_label("Name", exact=True).fill("sneaky")
        page.get_by_label("Adapter directory").fill("trained/beta")
        register.click(force=True)  # a user who tries anyway gets told why
        expect(page.locator(".toast").last).to_contain_text("needs an admin key")
        delete.click(force=True)
        expect(page.locator("#delete-dialog")).to_be_hidden()
        expect(page.locator("#sources")).to_contain_text("listed for admin keys")
        listed = httpx.get(f"{gateway.url}/v1/adapters/sneaky", headers=gateway.headers())
        assert listed.status_code == 404  # nothing was registered
        # The gateway enforces the same rule whatever a page does.
        status, message = page.evaluate(
            """async () => { const r = await fetch('/v1/adapters', { method: 'POST',
                 headers: { 'Content-Type': 'application/json',
                            Authorization: 'Bearer ' + sessionStorage.getItem('ragswap.console.apiKey') },
                 body: JSON.stringify({ name: 'sneaky', path: 'trained/beta' }) });
               return [r.status, (await r.json()).error.message]; }"""
        )
        assert status == 403 and "admin key" in message
        page.goto(f"{gateway.url}/ui/collections/{COLLECTION}")
        expect(page.locator("#dropzone")).to_have_attribute("aria-disabled", "true")
        page.locator("#dropzone").click(force=True)
        expect(page.locator(".toast").last).to_contain_text("needs an admin key")
        # Reads and inference stay available to a user key.
        page.get_by_label("Query").fill("return window")
        page.get_by_role("button", name="Search").click()
        expect(page.locator(f".hit[data-document='{HANDBOOK_NAME}']")).to_contain_text("45 days")
        page.goto(f"{gateway.url}/ui/adapters")
        expect(page.locator(f"tr[data-version='{ADAPTER}@1']")).to_be_visible()
        Console(page, gateway).shoot("adapters-user")
    finally:
        context.close()

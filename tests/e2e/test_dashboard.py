"""The dashboard in a real headless Chromium, against the real service on a loopback port."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import fakeredis
import pytest
from playwright.async_api import Browser, Page, expect

from orchestrator.app import create_app
from orchestrator.connections import embedded_redis
from orchestrator.models import JobStatus, UpdateRequest
from orchestrator.settings import Settings
from orchestrator.typedefs import STORE
from tests.support import DETAILED_SCHEMA, REPO, free_port

pytestmark = pytest.mark.browser
ARTIFACTS = REPO / "artifacts"

SCHEMA = DETAILED_SCHEMA
RESULT = {
    "aggregatedResults": [
        {"featureName": "age", "dataType": "NUMERIC", "aggregatedNotNull": 1000, "sumOfMin": 54, "sumOfMax": 240},
        {
            "featureName": "isActive",
            "dataType": "BOOLEAN",
            "aggregatedNotNull": 1000,
            "aggregatedTrue": 750,
            "percentage": 75.0,
        },
        {
            "featureName": "department",
            "dataType": "NOMINAL",
            "aggregatedNotNull": 900,
            "categoryCounts": {"sales": 500, "research": 300, "support": 100},
        },
    ],
    "metadata": {"totalFeatures": 3, "totalClients": 3, "doneCount": 3},
}


async def open_dashboard(browser: Browser, base: str, fragment: str = "") -> tuple[Page, list[str]]:
    """The dashboard (``fragment``: "#job=..." opens a job's detail), live, and the errors its console shows:
    a Content-Security-Policy violation is one."""
    page = await browser.new_page(viewport={"width": 1400, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    await page.goto(f"{base}/dashboard{fragment}")
    await expect(page.locator("#connection")).to_have_text("Live")
    return page, errors


async def post(
    session: aiohttp.ClientSession, base: str, job: str, client: str, total: int, schema: Any = None
) -> None:
    body = {"jobId": job, "clientId": client, "totalClients": total, "schema": schema}
    async with session.post(f"{base}/api/update", json=body) as resp:
        assert resp.status == 200


async def test_live_progress_status_and_result(
    browser: Browser, aiohttp_client: Callable[..., Any], tmp_path: Path
) -> None:
    client = await aiohttp_client(
        create_app(
            Settings(log_dir=str(tmp_path), results_save_path=str(tmp_path / "results"), aggregation_workers=0),
            redis=embedded_redis(fakeredis.FakeServer(), Settings()),
        )
    )
    base = str(client.make_url("")).rstrip("/")
    page, errors = await open_dashboard(browser, base)
    await expect(page.locator("#empty")).to_have_text("No jobs yet.")
    row = page.locator('tr[data-job-id="demo"]')
    async with aiohttp.ClientSession() as session:
        await post(session, base, "other", "a", 2)
        await post(session, base, "demo", "client_A", 3, SCHEMA)
        await expect(row.locator(".ratio")).to_have_text("1/3")
        await expect(row.locator(".badge")).to_have_text("IN PROGRESS")
        await post(session, base, "demo", "client_B", 3)
        await post(session, base, "demo", "client_C", 3)
        await expect(row.locator(".ratio")).to_have_text("3/3")
        await expect(row.locator(".badge")).to_have_text("AGGREGATING")
        assert await row.locator("progress").get_attribute("aria-label") == "demo: 3 of 3 clients done"
    # Newest first.
    await expect(page.locator("#jobs tbody tr").first).to_have_attribute("data-job-id", "demo")

    await page.get_by_role("button", name="demo").click()
    detail = page.locator("#detail")
    await expect(detail).to_be_visible()
    await expect(detail.locator("#detail-clients tbody tr")).to_have_count(3)
    await expect(detail.locator("#detail-schema tbody tr")).to_have_count(3)
    await expect(detail.locator("#detail-result")).to_contain_text("No result yet.")

    done, _ = await client.app[STORE].finish_job("demo", JobStatus.COMPLETED, result=RESULT)
    assert done
    await expect(row.locator(".badge")).to_have_text("COMPLETED")
    await expect(detail.locator(".feature")).to_have_count(3)
    await expect(detail.locator(".feature").nth(1)).to_contain_text("aggregatedTrue")
    await expect(detail.get_by_role("img", name="isActive: 75% true")).to_be_visible()
    categories = detail.get_by_role("img", name="department: count per category")
    await expect(categories).to_contain_text("research")
    await expect(categories.locator(".fill")).to_have_count(3)
    # The result was also written to files by the delivery workers; the detail view follows it live.
    await expect(detail.locator('#detail-deliveries li[data-destination="file"]')).to_have_attribute(
        "data-state", "delivered"
    )

    await page.select_option("#status-filter", "IN_PROGRESS")
    await expect(row).to_be_hidden()
    await expect(page.locator('tr[data-job-id="other"]')).to_be_visible()
    await expect(page.locator("#job-count")).to_have_text("(1 of 2)")
    await page.select_option("#status-filter", "COMPLETED")
    await expect(row).to_be_visible()
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
    assert errors == []


async def test_a_thousand_jobs_stay_responsive(
    browser: Browser, aiohttp_client: Callable[..., Any], tmp_path: Path
) -> None:
    settings = Settings(
        log_dir=str(tmp_path), results_save_path=str(tmp_path / "results"), ws_snapshot_jobs=1000, access_log=False
    )
    client = await aiohttp_client(create_app(settings, redis=embedded_redis(fakeredis.FakeServer(), Settings())))
    store = client.app[STORE]
    for start in range(0, 1000, 100):
        await asyncio.gather(
            *(store.record_update(UpdateRequest(f"bulk-{i:04d}", "c1", 4, None)) for i in range(start, start + 100))
        )
    base = str(client.make_url("")).rstrip("/")
    started = time.monotonic()
    page, errors = await open_dashboard(browser, base)
    await expect(page.locator("#jobs tbody tr")).to_have_count(1000)
    await expect(page.locator("#job-count")).to_have_text("(1000)")
    loaded = time.monotonic() - started
    row = page.locator('tr[data-job-id="bulk-0500"]')
    await expect(row.locator(".ratio")).to_have_text("1/4")
    async with aiohttp.ClientSession() as session:
        started = time.monotonic()
        await post(session, base, "bulk-0500", "c2", 4)
        await expect(row.locator(".ratio")).to_have_text("2/4")
        updated = time.monotonic() - started
        # A burst of updates to many jobs is applied in a few frames.
        await asyncio.gather(*(post(session, base, f"bulk-{i:04d}", "c2", 4) for i in range(0, 200)))
        await expect(page.locator('tr[data-job-id="bulk-0199"] .ratio')).to_have_text("2/4")
    started = time.monotonic()
    await page.fill("#search", "bulk-09")
    await expect(page.locator("#job-count")).to_have_text("(100 of 1000)")
    filtered = time.monotonic() - started
    assert loaded < 10, loaded
    assert updated < 2, updated
    assert filtered < 2, filtered
    assert errors == []


async def test_connection_indicator_recovers_after_a_server_restart(
    browser: Browser, aiohttp_server: Callable[..., Any], tmp_path: Path
) -> None:
    shared = fakeredis.FakeServer()
    port = free_port()
    settings = Settings(log_dir=str(tmp_path), results_save_path=str(tmp_path / "results"))
    server = await aiohttp_server(create_app(settings, redis=embedded_redis(shared, settings)), port=port)
    base = f"http://127.0.0.1:{port}"
    page, _ = await open_dashboard(browser, base)
    await server.close()
    await expect(page.locator("#connection")).to_have_attribute("data-state", "reconnecting")
    await expect(page.locator("#connection")).to_have_text("Reconnecting…")
    await aiohttp_server(create_app(settings, redis=embedded_redis(shared, settings)), port=port)
    await expect(page.locator("#connection")).to_have_text("Live", timeout=15000)
    async with aiohttp.ClientSession() as session:
        await post(session, base, "after-restart", "a", 2)
    await expect(page.locator('tr[data-job-id="after-restart"] .ratio')).to_have_text("1/2")


async def test_secure_sum_job_followed_live(
    browser: Browser, aiohttp_client: Callable[..., Any], tmp_path: Path
) -> None:
    from orchestrator.client import OrchestratorClient
    from orchestrator.securesum.demo import SCHEMA as SECURE_SCHEMA
    from orchestrator.securesum.demo import synthetic_rows
    from orchestrator.securesum.participant import submit_statistics

    client = await aiohttp_client(
        create_app(
            Settings(log_dir=str(tmp_path), results_save_path=str(tmp_path / "results"), aggregation_workers=1),
            redis=embedded_redis(fakeredis.FakeServer(), Settings()),
        )
    )
    base = str(client.make_url("")).rstrip("/")
    page, errors = await open_dashboard(browser, base)
    rng = __import__("random").Random(9)

    async def holder(n: int) -> dict[str, Any]:
        async with OrchestratorClient(base) as orchestrator:
            rows = synthetic_rows(rng, 50)
            return await submit_statistics(
                orchestrator, "secure", f"h{n}", 3, SECURE_SCHEMA, rows, wait=True, timeout=30
            )

    first = [asyncio.create_task(holder(n)) for n in range(2)]
    row = page.locator('tr[data-job-id="secure"]')
    await expect(row).to_be_visible()
    await row.get_by_role("button", name="secure").click()
    summary = page.locator("#detail-summary")
    await expect(summary).to_contain_text("secure-sum")
    await expect(summary).to_contain_text("2/3 keys")
    last = await holder(2)
    await asyncio.gather(*first)
    assert last["status"] == "COMPLETED"
    await expect(summary).to_contain_text("3/3 keys (complete)")
    await expect(row.locator(".badge")).to_have_text("COMPLETED")
    detail = page.locator("#detail")
    await expect(detail.locator(".feature")).to_have_count(len(SECURE_SCHEMA))
    await expect(detail.locator(".feature").first).to_contain_text("std")
    await expect(detail.get_by_role("img", name="bloodType: count per category")).to_be_visible()
    await expect(detail.locator("#detail-schema")).to_contain_text("[0, 120], 1 decimals")
    assert errors == []


async def test_dashboard_asks_for_a_token_and_runs_under_its_csp(
    browser: Browser, aiohttp_client: Callable[..., Any], tmp_path: Path
) -> None:
    from orchestrator.security.tokens import issue_token

    secret = "dashboard-secret-for-tests-0123456789ab"
    settings = Settings(
        log_dir=str(tmp_path),
        results_save_path=str(tmp_path / "results"),
        aggregation_workers=0,
        auth_jwt_secret=secret,
    )
    client = await aiohttp_client(create_app(settings, redis=embedded_redis(fakeredis.FakeServer(), Settings())))
    await client.app[STORE].record_update(UpdateRequest("secret-job", "c1", 2, None))
    base = str(client.make_url("")).rstrip("/")
    page = await browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    sockets: list[str] = []
    page.on("websocket", lambda ws: sockets.append(ws.url))
    await page.goto(f"{base}/dashboard")
    # No token: a sign-in form, and no data at all (no job row, no socket opened).
    await expect(page.locator("#login")).to_be_visible()
    await expect(page.locator("main")).to_be_hidden()
    assert await page.locator('tr[data-job-id="secret-job"]').count() == 0
    await page.fill("#login-token", "forged.token.value")
    await page.click("#login button")
    await expect(page.locator("#login-error")).to_contain_text("Token refused")
    await page.fill("#login-token", issue_token(secret, "c1", "client", 600))
    await page.click("#login button")
    await expect(page.locator("#login-error")).to_contain_text("client token cannot show the dashboard")
    assert sockets == []
    # A viewer token shows the jobs, over a socket opened with a single-use ticket (never the token).
    viewer = issue_token(secret, "ana", "viewer", 600)
    await page.fill("#login-token", viewer)
    await page.click("#login button")
    await expect(page.locator("#connection")).to_have_text("Live")
    await expect(page.locator('tr[data-job-id="secret-job"]')).to_be_visible()
    assert sockets and all("ticket=" in url and viewer not in url for url in sockets)
    # The token is kept for this tab: a reload goes straight to the data.
    await page.reload()
    await expect(page.locator('tr[data-job-id="secret-job"]')).to_be_visible()
    await expect(page.locator("#login")).to_be_hidden()
    await page.get_by_role("button", name="secret-job").click()
    await expect(page.locator("#detail-summary")).to_contain_text("1/2 clients")
    # Nothing broke the Content-Security-Policy (a violation is reported as a console error).
    assert errors == []

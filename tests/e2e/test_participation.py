"""The job detail's participation in a real headless Chromium (issue #10): k of n, who answered, who the job
or its secure-sum round waits for and a live countdown to when it closes, the clients dropped at a round, what
closed the collection, and the contributors of the result."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import fakeredis
import pytest
from playwright.async_api import Browser, Locator, expect

from orchestrator.app import create_app
from orchestrator.client import OrchestratorClient, OrchestratorError
from orchestrator.connections import embedded_redis
from orchestrator.securesum.participant import submit_statistics
from orchestrator.settings import Settings
from tests.e2e.test_dashboard import ARTIFACTS, open_dashboard

pytestmark = pytest.mark.browser

SCHEMA: list[dict[str, Any]] = [
    {"name": "age", "dataType": "NUMERIC", "bounds": [0, 120], "scale": 1},
    {"name": "smoker", "dataType": "BOOLEAN"},
]
ROWS = {
    "a": [{"age": 30, "smoker": True}, {"age": 50, "smoker": False}],
    "b": [{"age": 40, "smoker": False}],
    "c": [{"age": 20, "smoker": True}],
    "d": [{"age": 90, "smoker": True}],
}


async def start(aiohttp_client: Callable[..., Any], tmp_path: Path) -> str:
    """The service on fakeredis with one aggregation worker and a quick deadline sweeper; its base URL."""
    settings = Settings(
        log_dir=str(tmp_path),
        results_save_path=str(tmp_path / "results"),
        aggregation_workers=1,
        aggregation_sweep_seconds=0.2,
    )
    client = await aiohttp_client(create_app(settings, redis=embedded_redis(fakeredis.FakeServer(), Settings())))
    return str(client.make_url("")).rstrip("/")


def item(panel: Locator, key: str) -> Locator:
    return panel.locator(f'dd[data-item="{key}"]')


async def test_k_of_n_job_waits_counts_down_and_closes_by_an_admin(
    browser: Browser, aiohttp_client: Callable[..., Any], tmp_path: Path
) -> None:
    base = await start(aiohttp_client, tmp_path)
    page, errors = await open_dashboard(browser, base)
    panel = page.locator("#detail-participation")
    async with aiohttp.ClientSession() as session:

        async def report(client: str) -> None:
            body = {"jobId": "quorum", "clientId": client, "totalClients": 3, "minClients": 2}
            body |= {"aggregation": "none", "deadline": 90}
            async with session.post(f"{base}/api/update", json=body) as resp:
                assert resp.status == 200, await resp.text()

        await report("a")
        await page.get_by_role("button", name="quorum").click()
        await expect(item(panel, "quorum")).to_have_text("needs 2 of 3: 1 more needed")
        await expect(item(panel, "waiting")).to_have_text("waiting for 2 more clients")
        await report("b")
        # The new events refresh the detail: b is in, the quorum reached, one client still awaited.
        await expect(item(panel, "answered")).to_have_text("2 of 3: a, b")
        await expect(item(panel, "quorum")).to_have_text("needs 2 of 3: reached")
        await expect(item(panel, "waiting")).to_have_text("waiting for 1 more client")
        countdown = panel.locator(".countdown")
        await expect(countdown).to_have_text(re.compile(r"^closes in 1 min [0-9]+ s$"))
        # It is live: the text changes with the seconds, without any event.
        first = await countdown.text_content()
        await expect(countdown).not_to_have_text(first or "", timeout=3000)
        await expect(page.locator("#participation h3")).to_have_text("Participation")

        async with session.post(f"{base}/api/jobs/quorum/close", json={"reason": "enough"}) as resp:
            assert resp.status == 200, await resp.text()
            assert (await resp.json())["status"] == "AGGREGATING"
    await expect(page.locator("#detail-summary .badge")).to_have_text("COMPLETED")
    await expect(item(panel, "result")).to_have_text("result over 2 of 3 clients")
    await expect(item(panel, "contributors")).to_have_text("a, b")
    await expect(item(panel, "missing")).to_have_text("1 client never reported")
    await expect(item(panel, "closed-by")).to_have_text("an admin")
    await expect(panel.locator(".countdown")).to_have_count(0)
    await expect(item(panel, "waiting")).to_have_count(0)
    assert errors == []


async def test_secure_sum_shows_its_rounds_and_the_client_dropped_at_shares(
    browser: Browser, aiohttp_client: Callable[..., Any], tmp_path: Path
) -> None:
    base = await start(aiohttp_client, tmp_path)
    # The detail opened before the job exists follows it from its creation.
    page, errors = await open_dashboard(browser, base, "#job=rounds")
    await expect(page.locator("#detail-summary")).to_contain_text("No job rounds (yet)")
    panel = page.locator("#detail-participation")
    steps = panel.locator(".steps li")

    async def holder(client: str, stop: str | None) -> dict[str, Any]:
        async with OrchestratorClient(base) as orchestrator:
            return await submit_statistics(
                orchestrator,
                "rounds",
                client,
                4,
                SCHEMA,
                ROWS[client],
                min_clients=3,
                round_timeout=3,
                stop_after=stop,
                timeout=30,
            )

    tasks = [asyncio.create_task(holder(c, "keys" if c == "d" else None)) for c in "abcd"]
    try:
        # While the shares round is open: d registered its keys and never posted shares.
        await expect(item(panel, "waiting")).to_have_text("waiting for d")
        await expect(item(panel, "answered")).to_have_text("3 of 4: a, b, c")
        await expect(panel.locator("dt").filter(has_text="The shares round")).to_have_count(1)
        await expect(panel.locator(".countdown")).to_have_text(re.compile(r"^(closes in [0-9] s|closing…)$"))
        await expect(item(panel, "quorum")).to_have_text("needs 3 of 4: reached in the shares round")
        await expect(steps).to_have_count(4)
        await expect(panel.locator('.steps li[data-round="keys"]')).to_have_attribute("data-state", "done")
        await expect(panel.locator('.steps li[aria-current="step"]')).to_have_text("shares")
        await expect(panel.locator('.steps li[data-round="inputs"]')).to_have_attribute("data-state", "pending")
        ARTIFACTS.mkdir(exist_ok=True)
        await page.locator("#detail").screenshot(path=str(ARTIFACTS / "participation-shares.png"))
        outcomes = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 30)
    finally:
        for task in tasks:
            task.cancel()
    assert not [o for o in outcomes if isinstance(o, BaseException) and not isinstance(o, OrchestratorError)]
    # The round timed out without d: dropped at shares, and the sum is over the three others.
    await expect(page.locator("#detail-summary .badge")).to_have_text("COMPLETED", timeout=15000)
    await expect(panel.locator('.dropped li[data-client="d"]')).to_have_text("d at the shares round")
    await expect(item(panel, "result")).to_have_text("result over 3 of 4 clients")
    await expect(item(panel, "contributors")).to_have_text("a, b, c")
    await expect(item(panel, "missing")).to_have_text("d")
    for n in range(4):
        await expect(steps.nth(n)).to_have_attribute("data-state", "done")
    await expect(page.locator("#detail .feature")).to_have_count(len(SCHEMA))
    await page.locator("#detail").screenshot(path=str(ARTIFACTS / "participation-done.png"))
    assert errors == []


async def test_the_detail_refreshes_under_a_viewer_token(
    browser: Browser, aiohttp_client: Callable[..., Any], tmp_path: Path
) -> None:
    from orchestrator.security.tokens import issue_token

    secret = "participation-secret-for-tests-0123456789"
    settings = Settings(
        log_dir=str(tmp_path),
        results_save_path=str(tmp_path / "results"),
        aggregation_workers=0,
        auth_jwt_secret=secret,
    )
    client = await aiohttp_client(create_app(settings, redis=embedded_redis(fakeredis.FakeServer(), Settings())))
    base = str(client.make_url("")).rstrip("/")
    admin = {"Authorization": f"Bearer {issue_token(secret, 'ops', 'admin', 600)}"}
    page = await browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    await page.goto(f"{base}/dashboard#job=signed")
    await page.fill("#login-token", issue_token(secret, "ana", "viewer", 600))
    await page.click("#login button")
    await expect(page.locator("#connection")).to_have_text("Live")
    panel = page.locator("#detail-participation")
    async with aiohttp.ClientSession(headers=admin) as session:
        for name, shown in (("a", "1 of 3: a"), ("b", "2 of 3: a, b")):
            body = {"jobId": "signed", "clientId": name, "totalClients": 3, "minClients": 2}
            async with session.post(f"{base}/api/update", json=body) as resp:
                assert resp.status == 200, await resp.text()
            # b's events made the page fetch the job again, with the viewer's token (a 401 is a console error).
            await expect(item(panel, "answered")).to_have_text(shown)
    await expect(item(panel, "waiting")).to_have_text("waiting for 1 more client")
    await expect(panel.locator(".countdown")).to_have_text(re.compile(r"^closes in 23 h 59 min$"))
    assert errors == []

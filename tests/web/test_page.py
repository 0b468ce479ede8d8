"""The command-center page in a real browser (Debian's Chromium driven by Playwright) against a real
server worker process, fed by simulated homes (real agents with simulated devices) over real Mosquitto.

Screenshots of the board and of a patient's detail are written to test-artifacts/ for people to look at.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest
from playwright.async_api import Browser, Page, async_playwright, expect
from support.broker import MosquittoBroker, free_port

from simulators.home import home_config, run_home

WARDWATCH = str(Path(sys.executable).parent / "wardwatch")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
]


def chromium_path() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    message = "Debian's chromium is not installed (make test installs it as root)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)


@contextlib.asynccontextmanager
async def server_process(broker: MosquittoBroker, state: Path, port: int) -> AsyncIterator[dict[str, str]]:
    env = {
        **os.environ,
        "WARDWATCH_SERVER_STATE_DIR": str(state),
        "WARDWATCH_SERVER_BROKER__URL": broker.url,
        "WARDWATCH_SERVER_WORKER_ID": "web-test",
        "WARDWATCH_SERVER_API__PORT": str(port),
    }
    process = await asyncio.create_subprocess_exec(
        WARDWATCH, "server", env=env, stdin=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    assert process.stderr is not None
    seen: list[str] = []
    try:
        async with asyncio.timeout(60):
            while True:
                line = (await process.stderr.readline()).decode(errors="replace")
                if not line:
                    raise AssertionError("server ended before it was ready:\n" + "".join(seen[-40:]))
                seen.append(line)
                if "ready" in line:
                    break
        drain = asyncio.create_task(_drain(process.stderr))
        yield env
    finally:
        if process.returncode is None:
            process.terminate()
            await asyncio.wait_for(process.wait(), 30)
        with contextlib.suppress(NameError, asyncio.CancelledError):
            drain.cancel()


async def _drain(stream: asyncio.StreamReader) -> None:
    while await stream.readline():
        pass


async def create_token(env: dict[str, str], role: str, name: str) -> str:
    process = await asyncio.create_subprocess_exec(
        WARDWATCH, "server", "token", "create", "--role", role, "--name", name,
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, err.decode()
    return out.decode().strip().splitlines()[-1]


@contextlib.asynccontextmanager
async def homes(
    broker: MosquittoBroker, tmp_path: Path, plan: list[tuple[str, str, float]]
) -> AsyncIterator[None]:
    tasks = []
    for gateway_id, scenario, start_h in plan:
        config = home_config(
            gateway_id,
            broker_url=broker.url,
            scenario=scenario,
            outbox_path=tmp_path / f"{gateway_id}.db",
            patient_id=f"pt-{gateway_id}",
            heartbeat_interval_s=5,
        )
        tasks.append(
            asyncio.create_task(run_home(config, scenario=scenario, seed=11, speed=1, start_h=start_h))
        )
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


@contextlib.asynccontextmanager
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        instance = await playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        try:
            yield instance
        finally:
            await instance.close()


async def sign_in(page: Page, base: str, token: str) -> None:
    await page.goto(base + "/")
    await page.fill("#token", token)
    await page.click("#sign-in-form button[type=submit]")
    await expect(page.locator("#view-board")).to_be_visible()


@pytest.mark.slow
async def test_board_alerts_and_acknowledgement_in_a_real_browser(
    broker_factory: Callable[..., MosquittoBroker], tmp_path: Path
) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    broker = broker_factory()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    async with server_process(broker, tmp_path / "state", port) as env:
        token = await create_token(env, "physician", "dr-test")
        async with (
            browser() as chromium,
            homes(broker, tmp_path, [("gw-stable-a", "stable", 2), ("gw-stable-b", "stable", 3)]),
        ):
            page = await chromium.new_page(viewport={"width": 1500, "height": 900})
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))

            # a wrong token is refused
            await page.goto(base + "/")
            await page.fill("#token", "ww_not_a_token")
            await page.click("#sign-in-form button[type=submit]")
            await expect(page.locator("#sign-in-error")).to_have_text(re.compile("refused"))

            await sign_in(page, base, token)
            rows = page.locator("#board tbody tr")
            await expect(rows).to_have_count(2, timeout=30_000)
            await expect(page.locator("#live")).to_have_text("live", timeout=15_000)
            await page.evaluate("window.__notReloaded = true")

            # a patient deteriorates (sepsis, joined 24 h in): it rises to the top with its high alert
            async with homes(broker, tmp_path, [("gw-sepsis", "sepsis", 24)]):
                first = rows.first
                await expect(first).to_have_attribute("data-patient", "pt-gw-sepsis", timeout=60_000)
                await expect(first.locator(".risk")).to_contain_text("High", timeout=60_000)
                await expect(page.locator("#alert-count")).not_to_have_text("", timeout=60_000)
                assert await page.evaluate("window.__notReloaded === true"), "the page was reloaded"
                await page.wait_for_timeout(1500)  # let the sparklines draw before the picture
                await page.screenshot(path=str(ARTIFACTS / "board.png"), full_page=True)

                # the patient's detail with its charts
                await first.locator("a").click()
                await expect(page.locator("#patient-title")).to_contain_text("pt-gw-sepsis")
                await expect(page.locator("#patient-charts figure")).to_have_count(6)
                await page.wait_for_timeout(500)
                await page.screenshot(path=str(ARTIFACTS / "patient.png"), full_page=True)

                # acknowledge the high alert from the queue
                await page.click("#nav a[data-view=alerts]")
                row = page.locator("#queue tbody tr", has_text="pt-gw-sepsis").first
                await expect(row).to_be_visible()
                alert_id = await row.get_attribute("data-alert")
                await row.get_by_role("button", name="Acknowledge").click()
                await page.fill("#confirm-note", "calling the patient now")
                await page.click("#confirm-ok")
                await expect(page.locator(f'#queue tbody tr[data-alert="{alert_id}"]')).to_have_attribute(
                    "data-state", "acknowledged", timeout=15_000
                )
                await page.screenshot(path=str(ARTIFACTS / "alerts.png"), full_page=True)

        async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {token}"}) as api:
            detail = (await api.get(f"/api/alerts/{alert_id}")).json()
            audit = (await api.get("/api/audit")).json()
    assert detail["alert"]["state"] == "acknowledged"
    assert detail["alert"]["acknowledged_by"] == "dr-test"
    assert any(e["action"] == "acknowledged" and e["actor"] == "dr-test" for e in detail["events"])
    assert any(
        entry["action"] == "acknowledged" and entry["actor"] == "dr-test" and alert_id in entry["target"]
        for entry in audit["items"]
    )
    assert not errors, errors

"""A real browser for tests: Debian's Chromium (package ``chromium``, installed by scripts/setup.sh), headless,
driven over its DevTools protocol, so a test sees a page as a person would once its JavaScript has run.

``page_dom(url, profile, until)`` opens ``url`` in a fresh profile and polls the live DOM until ``until(dom)``
holds or ``timeout`` passes, then returns the DOM (the last one seen, for the caller's assertion message).
Polling the live page is what a person does ("wait until the form shows"); ``--dump-dom`` with a virtual
time budget takes one snapshot whose timing depends on how the page's requests interleave, and single-page
apps (Gradio, MLflow) fill their content from later requests.

As root on these machines (no user namespace sandbox, no network): ``--no-sandbox`` and every flag that
stops Chromium reaching for Google's hosts (FACTS: otherwise its connections are refused many at a time).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Callable, Optional

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def chromium_binary() -> str:
    found = shutil.which("chromium")
    if not found:
        raise RuntimeError("no chromium: scripts/setup.sh installs the Debian package")
    return found


def page_dom(url: str, profile: Path, until: Callable[[str], bool], timeout: float = 60.0) -> str:
    """The DOM of ``url`` once ``until(dom)`` holds (or the last one after ``timeout`` seconds)."""
    profile.mkdir(parents=True, exist_ok=True)
    command = [chromium_binary(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--remote-debugging-port=0"]
    proc = subprocess.Popen([*command, "about:blank"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        port = _devtools_port(profile, proc, deadline=time.monotonic() + 30)
        quoted = urllib.parse.quote(url, safe="")  # all of it, "#" too: it is the query of /json/new
        request = urllib.request.Request(f"http://127.0.0.1:{port}/json/new?{quoted}", method="PUT")
        with NO_PROXY.open(request, timeout=10) as response:
            target = json.loads(response.read())
        return asyncio.run(_poll_dom(target["webSocketDebuggerUrl"], until, timeout))
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _devtools_port(profile: Path, proc: subprocess.Popen, deadline: float) -> int:
    """Chromium writes the port it chose for ``--remote-debugging-port=0`` into the profile."""
    active = profile / "DevToolsActivePort"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"chromium exited with {proc.returncode} before its DevTools port was open")
        text = active.read_text() if active.exists() else ""
        if text.strip():
            return int(text.split()[0])
        time.sleep(0.1)
    raise RuntimeError("chromium did not open its DevTools port in time")


async def _poll_dom(ws_url: str, until: Callable[[str], bool], timeout: float) -> str:
    import aiohttp

    deadline = time.monotonic() + timeout
    dom: Optional[str] = None
    message_id = 0
    async with aiohttp.ClientSession() as session, session.ws_connect(ws_url, max_msg_size=0) as ws:
        while True:
            message_id += 1
            expression = "document.readyState === 'loading' ? '' : document.documentElement.outerHTML"
            await ws.send_json(
                {
                    "id": message_id,
                    "method": "Runtime.evaluate",
                    "params": {"expression": expression, "returnByValue": True},
                }
            )
            while True:
                reply = await asyncio.wait_for(ws.receive_json(), timeout=30)
                if reply.get("id") == message_id:
                    break
            value = reply.get("result", {}).get("result", {}).get("value")
            if isinstance(value, str) and value:
                dom = value
                if until(dom):
                    return dom
            if time.monotonic() > deadline:
                return dom or ""
            await asyncio.sleep(0.5)

"""JupyterLab is the front door: a real Jupyter server (the one `make lab` starts) serves the
notebooks folder, pairs each .ipynb with its percent-format .py (jupytext), starts the project's
``python3`` kernel and runs notebook 00 through the kernel's websocket, figures inline.

No browser is involved; this talks to the same REST and websocket endpoints JupyterLab's front end
uses. The server runs on a free local port with a random token, on a copy of the notebook, and is
shut down (kernels included) whatever happens.
"""
from __future__ import annotations

import asyncio
import datetime
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import jupyter_server  # noqa: F401  (the notebooks extra installs it: a missing one is a failure, not a skip)
import jupyterlab  # noqa: F401
import nbformat
import pytest
from tornado import httpclient, websocket

pytestmark = pytest.mark.notebook

NB_DIR = Path(__file__).resolve().parents[2] / "notebooks"

STEM = "00_tour"
KERNEL = "python3"            # the kernel name `make setup` installs (ipykernel install --name python3)
SERVER_START_TIMEOUT = 180    # seconds until the REST API must answer
CELL_TIMEOUT = 900            # seconds one cell may run
HTTP_TIMEOUT = 60


class Server:
    """A running ``jupyter lab`` subprocess and a small client for its REST API."""

    def __init__(self, proc: subprocess.Popen, port: int, token: str, root: Path, log: Path):
        self.proc, self.port, self.token, self.root, self.log = proc, port, token, root, log
        self.base = f"http://127.0.0.1:{port}"

    def log_tail(self, n: int = 4000) -> str:
        try:
            return self.log.read_text(errors="replace")[-n:]
        except OSError:
            return "<no server log>"

    def request(self, method: str, path: str, body=None, timeout: float = HTTP_TIMEOUT):
        """``(status, parsed JSON or None)`` of one REST call; HTTP errors are returned, not raised."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method)
        req.add_header("Authorization", f"token {self.token}")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                status, raw = r.status, r.read()
        except urllib.error.HTTPError as e:
            status, raw = e.code, e.read()
        try:
            return status, (json.loads(raw) if raw else None)
        except ValueError:
            return status, raw.decode(errors="replace")

    def get_ok(self, path: str):
        status, payload = self.request("GET", path)
        assert status == 200, f"GET {path} -> {status}: {str(payload)[:500]}"
        return payload


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_until_up(server: Server) -> None:
    deadline = time.monotonic() + SERVER_START_TIMEOUT
    last = "no answer yet"
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            pytest.fail(f"jupyter lab exited with code {server.proc.returncode} before answering; "
                        f"its log:\n{server.log_tail()}")
        try:
            status, payload = server.request("GET", "/api/status", timeout=5)
            if status == 200:
                return
            last = f"HTTP {status}: {str(payload)[:200]}"
        except OSError as e:          # refused / reset / timed out while it starts
            last = repr(e)
        time.sleep(0.5)
    pytest.fail(f"jupyter lab did not answer /api/status within {SERVER_START_TIMEOUT}s ({last}); "
                f"its log:\n{server.log_tail()}")


def _stop(server: Server) -> None:
    """Shut the server down through its API (which also shuts its kernels down), then make sure."""
    proc = server.proc
    if proc.poll() is None:
        try:
            server.request("POST", "/api/shutdown", timeout=10)
        except OSError:
            pass
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGINT)       # jupyter's own "stop" path: it cleans its kernels up
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


@pytest.fixture
def lab_server(tmp_path):
    """``jupyter lab`` (as `make lab` starts it) on a copy of notebook 00, its pair and jupytext.toml."""
    root = tmp_path / "notebooks"
    root.mkdir()
    for name in (f"{STEM}.ipynb", f"{STEM}.py", "jupytext.toml"):
        shutil.copy2(NB_DIR / name, root / name)
    port, token = _free_port(), secrets.token_hex(16)
    env = dict(os.environ)
    env.update({
        # the same offline defaults the Makefile exports
        "HF_HUB_OFFLINE": env.get("HF_HUB_OFFLINE", "1"),
        "TOKENIZERS_PARALLELISM": env.get("TOKENIZERS_PARALLELISM", "false"),
        # keep the user's own Jupyter/IPython config and runtime files out of it (the environment's
        # config under sys.prefix, which enables the jupytext server extension, still applies)
        "JUPYTER_CONFIG_DIR": str(tmp_path / "jupyter_config"),
        "JUPYTER_RUNTIME_DIR": str(tmp_path / "jupyter_runtime"),
        "IPYTHONDIR": str(tmp_path / "ipython"),
    })
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.open_browser=False",
           "--ip=127.0.0.1", f"--port={port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
           str(root)]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.insert(3, "--allow-root")         # containers and CI often run as root; jupyter refuses otherwise
    log = tmp_path / "jupyter_lab.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=fh, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
    server = Server(proc, port, token, root, log)
    try:
        _wait_until_up(server)
        yield server
    finally:
        _stop(server)


# --- the kernel's websocket -------------------------------------------------------------------


def _message(msg_type: str, session: str, content: dict, channel: str = "shell") -> dict:
    return {
        "header": {"msg_id": uuid.uuid4().hex, "msg_type": msg_type, "session": session,
                   "username": "test", "version": "5.3",
                   "date": datetime.datetime.now(datetime.timezone.utc).isoformat()},
        "parent_header": {}, "metadata": {}, "content": content, "channel": channel, "buffers": [],
    }


async def _request(ws, session: str, msg_type: str, content: dict, timeout: float) -> dict:
    """Send one shell request; collect its iopub messages until the kernel is idle again and the
    shell reply has arrived. Returns ``{"reply": content, "iopub": [messages]}``."""
    msg = _message(msg_type, session, content)
    msg_id = msg["header"]["msg_id"]
    await ws.write_message(json.dumps(msg))
    reply, iopub, idle = None, [], False

    async def collect():
        nonlocal reply, idle
        while reply is None or not idle:
            raw = await ws.read_message()
            if raw is None:
                raise AssertionError(f"kernel websocket closed while waiting for the {msg_type} reply "
                                     f"(close code {ws.close_code}, {ws.close_reason!r})")
            if isinstance(raw, bytes):          # a binary frame (buffers); none are expected here
                continue
            m = json.loads(raw)
            if m.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            if m["channel"] == "shell":
                reply = m["content"]
            elif m["channel"] == "iopub":
                iopub.append(m)
                if m["msg_type"] == "status" and m["content"]["execution_state"] == "idle":
                    idle = True

    try:
        await asyncio.wait_for(collect(), timeout)
    except asyncio.TimeoutError:
        raise AssertionError(f"no complete {msg_type} reply within {timeout}s "
                             f"(reply={reply is not None}, idle={idle}, {len(iopub)} iopub messages)") from None
    return {"reply": reply, "iopub": iopub}


def _stream_text(iopub, name: str) -> str:
    return "".join(m["content"]["text"] for m in iopub if m["msg_type"] == "stream" and m["content"]["name"] == name)


async def _run_cells(server: Server, kernel_id: str, cells: list[str]) -> dict:
    session = uuid.uuid4().hex
    url = f"ws://127.0.0.1:{server.port}/api/kernels/{kernel_id}/channels?session_id={session}"
    req = httpclient.HTTPRequest(url, headers={"Authorization": f"token {server.token}"},
                                 connect_timeout=HTTP_TIMEOUT, request_timeout=HTTP_TIMEOUT)
    ws = await websocket.websocket_connect(req, max_message_size=256 * 1024 * 1024)
    try:
        info = await _request(ws, session, "kernel_info_request", {}, HTTP_TIMEOUT)
        where = await _request(ws, session, "execute_request",
                               {"code": "import sys, os; print(sys.prefix); print(os.getcwd())",
                                "silent": False, "store_history": False, "user_expressions": {},
                                "allow_stdin": False, "stop_on_error": True}, HTTP_TIMEOUT)
        results = []
        for code in cells:
            t0 = time.monotonic()
            r = await _request(ws, session, "execute_request",
                               {"code": code, "silent": False, "store_history": True, "user_expressions": {},
                                "allow_stdin": False, "stop_on_error": True}, CELL_TIMEOUT)
            r["seconds"] = time.monotonic() - t0
            results.append(r)
            if r["reply"].get("status") != "ok":
                break                                   # the rest would fail on the missing state
        return {"info": info, "where": where, "cells": results}
    finally:
        ws.close()


# --- the tests ----------------------------------------------------------------------------------


def test_lab_lists_and_pairs_the_notebooks(lab_server):
    """The contents API lists the notebook and its .py; jupytext's contents manager is active, so the
    .py opens as a notebook with the same cells, and saving the notebook rewrites its .py twin."""
    listing = lab_server.get_ok("/api/contents/")
    types = {c["name"]: c["type"] for c in listing["content"]}
    assert types.get(f"{STEM}.ipynb") == "notebook", f"no {STEM}.ipynb notebook in the listing: {types}"
    assert f"{STEM}.py" in types, f"no {STEM}.py in the listing: {types}"

    nb_model = lab_server.get_ok(f"/api/contents/{STEM}.ipynb?type=notebook&content=1")
    status, py_model = lab_server.request("GET", f"/api/contents/{STEM}.py?type=notebook&content=1")
    assert status == 200 and py_model["type"] == "notebook", (
        f"{STEM}.py does not open as a notebook (HTTP {status}: {str(py_model)[:300]}): the jupytext "
        f"server extension (jupyterlab_jupytext) is not active in this environment; server log:\n"
        f"{lab_server.log_tail()}")

    def sources(model):
        return [(c["cell_type"], c["source"].strip()) for c in model["content"]["cells"]]

    assert sources(py_model) == sources(nb_model), f"{STEM}.py and {STEM}.ipynb hold different cells"
    # the pairing comes from jupytext.toml (formats = "ipynb,py:percent"), not from the notebook's
    # metadata: saving from the front end writes both files of the pair
    probe = f"pairing probe {secrets.token_hex(4)}"
    content = nb_model["content"]
    content["cells"].append({"cell_type": "markdown", "metadata": {}, "source": probe,
                             "id": secrets.token_hex(4)})
    status, saved = lab_server.request("PUT", f"/api/contents/{STEM}.ipynb",
                                       {"type": "notebook", "format": "json", "content": content})
    assert status == 200, f"saving {STEM}.ipynb failed: HTTP {status}: {str(saved)[:300]}"
    py_text = (lab_server.root / f"{STEM}.py").read_text()
    assert f"# {probe}" in py_text, f"saving {STEM}.ipynb did not update its paired {STEM}.py"
    assert probe in (lab_server.root / f"{STEM}.ipynb").read_text()


def test_lab_runs_tour_through_kernel_websocket(lab_server):
    """Start the project's kernel for notebook 00 (as opening it in JupyterLab does), run every code
    cell over the websocket: each replies ok, no error output, and the figures arrive inline as PNG."""
    status, page = lab_server.request("GET", "/lab")
    assert status == 200 and "JupyterLab" in str(page), f"GET /lab -> {status}: no JupyterLab page"
    specs = lab_server.get_ok("/api/kernelspecs")
    assert KERNEL in specs["kernelspecs"], f"no {KERNEL!r} kernel; the server knows {sorted(specs['kernelspecs'])}"

    nb = nbformat.read(lab_server.root / f"{STEM}.ipynb", as_version=4)
    cells = [c.source for c in nb.cells if c.cell_type == "code" and c.source.strip()]
    assert cells, f"{STEM}.ipynb has no code cells"
    assert "parameters" in next(c for c in nb.cells if c.cell_type == "code").metadata.get("tags", []), (
        "the first code cell should be the parameters cell (its defaults are what a reader runs)")

    status, session = lab_server.request("POST", "/api/sessions", {
        "path": f"{STEM}.ipynb", "name": f"{STEM}.ipynb", "type": "notebook", "kernel": {"name": KERNEL}})
    assert status == 201, f"could not start a {KERNEL} kernel: HTTP {status}: {str(session)[:500]}\n" \
                          f"{lab_server.log_tail()}"
    kernel = session["kernel"]
    assert kernel["name"] == KERNEL
    try:
        t0 = time.monotonic()
        run = asyncio.run(_run_cells(lab_server, kernel["id"], cells))
        elapsed = time.monotonic() - t0
    finally:
        lab_server.request("DELETE", f"/api/sessions/{session['id']}")

    info = run["info"]["reply"]
    assert info["status"] == "ok" and info["language_info"]["name"] == "python", info
    prefix, cwd = _stream_text(run["where"]["iopub"], "stdout").split("\n")[:2]
    assert Path(prefix).resolve() == Path(sys.prefix).resolve(), (
        f"the {KERNEL} kernel runs in {prefix}, not in this environment ({sys.prefix})")
    assert Path(cwd).resolve() == lab_server.root.resolve(), f"the kernel runs in {cwd}, not the notebook's folder"

    problems, images = [], 0
    for i, r in enumerate(run["cells"]):
        status = r["reply"].get("status")
        if status != "ok":
            problems.append(f"cell {i}: status {status}: {r['reply'].get('ename')}: {r['reply'].get('evalue')}")
        for m in r["iopub"]:
            if m["msg_type"] == "error":
                problems.append(f"cell {i}: error output {m['content']['ename']}: {m['content']['evalue']}")
            if m["msg_type"] == "display_data" and "image/png" in m["content"]["data"]:
                images += 1
    timings = ", ".join(f"{r['seconds']:.1f}" for r in run["cells"])
    assert len(run["cells"]) == len(cells) and not problems, (
        f"{STEM} over the kernel websocket ran {len(run['cells'])}/{len(cells)} cells: " + "; ".join(problems))
    assert images >= 1, f"{STEM}: no inline image/png display_data arrived (cell seconds: {timings})"
    saved = sorted((lab_server.root / "artifacts" / "00" / "figures").glob("*.png"))
    assert images == len(saved), f"{STEM}: {images} inline images for {len(saved)} saved figures"
    print(f"{STEM}: {len(cells)} code cells, {images} inline PNG, {elapsed:.1f}s (cells: {timings})")

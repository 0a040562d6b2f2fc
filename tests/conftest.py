"""Shared fixtures: the embedded default model (fp32, loaded once per session), the shipped reverse model, the URLs
of real vLLM servers (tests marked ``vllm``), a tiny random reverse-order model, a local OpenAI-compatible stub
server for chat clients and judges, and the check of the CLI's user-error contract (``one_line_error``). An
exception raised in a thread that a test starts fails the test."""

from __future__ import annotations

import json
import os
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
import torch

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def pytest_configure(config):
    """An exception raised inside a thread that a test started fails that test (pytest itself only warns)."""
    config.addinivalue_line("filterwarnings", "error::pytest.PytestUnhandledThreadExceptionWarning")


def pytest_collection_modifyitems(config, items):
    """Tests marked ``gpu`` need a CUDA device; without one they are skipped (never silently passed)."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def check_one_line_error(res) -> str:
    """The CLI's user-error contract: exit status 2 and exactly one stderr line ``trlm: error: ...`` (no usage box,
    no traceback). ``res`` is a CliRunner result or a finished ``subprocess.run``; returns the line."""
    code = res.exit_code if hasattr(res, "exit_code") else res.returncode
    assert code == 2, f"exit status {code}, not 2:\n{res.stdout}{res.stderr}"
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("trlm: error: "), f"not one 'trlm: error:' line:\n{res.stderr}"
    return lines[0]


@pytest.fixture(scope="session")
def one_line_error():
    """:func:`check_one_line_error`, for tests of CLI user errors."""
    return check_one_line_error


def _vllm_url(var: str) -> str:
    """A real vLLM server's base URL from ``var`` (set by scripts/vllm_test.sh, `make test-vllm`); skip without one,
    except under ``TRLM_REQUIRE_VLLM=1`` (what the script sets), where a missing server fails the test."""
    url = os.environ.get(var)
    if not url:
        if os.environ.get("TRLM_REQUIRE_VLLM"):
            pytest.fail(f"{var} is not set, but TRLM_REQUIRE_VLLM=1 asks for a real vLLM server")
        pytest.skip(f"needs a vLLM server: {var} (scripts/vllm_test.sh, make test-vllm)")
    return url


def start_trlm_serve(flags: list[str], log, timeout: float = 180.0):
    """``python -m trlm.serve.cli --port P FLAGS`` on a free loopback port, logging to the open file ``log``; waits
    for ``/health`` and returns ``(base URL, process)``. A server that exits or never answers fails the test."""
    import socket
    import subprocess
    import sys
    import time

    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "trlm.serve.cli", "--port", str(port), *flags], stdout=log,
                            stderr=subprocess.STDOUT)
    url, t_end = f"http://127.0.0.1:{port}", time.monotonic() + timeout
    while time.monotonic() < t_end:
        if proc.poll() is not None:
            log.seek(0)
            pytest.fail(f"trlm serve exited with {proc.returncode}:\n{log.read()[-3000:]}")
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return url, proc
        except httpx.HTTPError:
            time.sleep(0.3)
    proc.kill()
    pytest.fail(f"trlm serve did not come up within {timeout:.0f} s")


@pytest.fixture(scope="session")
def trlm_serve():
    """:func:`start_trlm_serve`, for tests that run the real ``trlm serve``."""
    return start_trlm_serve


@pytest.fixture(scope="session")
def vllm_url():
    """The forward vLLM server (smollm2-135m-instruct, float32) of the tests marked ``vllm``."""
    return _vllm_url("TRLM_TEST_VLLM_URL")


@pytest.fixture(scope="session")
def vllm_reverse_url():
    """The reverse vLLM server (trlm-ba-smol merged, float32) of the tests marked ``vllm``."""
    return _vllm_url("TRLM_TEST_VLLM_REVERSE_URL")


@pytest.fixture(scope="session")
def smol():
    from trlm.core.engine import Engine

    return Engine.load("smollm2-135m-instruct", dtype="float32", device="cpu")


@pytest.fixture(scope="session")
def ba_smol():
    """The shipped reverse-order model trlm-ba-smol, fp32."""
    from trlm.core.engine import Engine

    return Engine.load("trlm-ba-smol", dtype="float32", device="cpu")


def _tiny_checkpoint(tmp_path_factory, smol, order: str):
    """A randomly initialised 2-layer Llama with SmolLM2's tokenizer, saved as a checkpoint of ``order``."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from trlm.core.checkpoint import save_pretrained

    torch.manual_seed(0)
    tok = smol.tokenizer
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, tie_word_embeddings=True)
    model = LlamaForCausalLM(cfg)
    path = tmp_path_factory.mktemp("ckpt") / f"tiny-{order}"
    save_pretrained(model, tok, path, order, description="test fixture")
    return path


@pytest.fixture(scope="session")
def tiny_reverse_dir(tmp_path_factory, smol):
    return _tiny_checkpoint(tmp_path_factory, smol, "reverse")


@pytest.fixture(scope="session")
def tiny_forward_dir(tmp_path_factory, smol):
    """The same random model as a forward checkpoint: a weak drafter for the embedded model."""
    return _tiny_checkpoint(tmp_path_factory, smol, "forward")


class ChatStub:
    """State of the stub server: ``respond(body) -> (status, reply text | error object[, headers])`` and every
    request seen as ``(path, Authorization header, body)``."""

    def __init__(self, url: str):
        self.url, self.seen = url, []
        self.respond = lambda body: (200, "ok")


@pytest.fixture()
def chat_server():
    """A local OpenAI-compatible ``POST /v1/chat/completions`` endpoint on 127.0.0.1 (an ephemeral port)."""
    stub: ChatStub

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            stub.seen.append((self.path, self.headers.get("Authorization"), body))
            status, reply, *headers = stub.respond(body)
            obj = reply if isinstance(reply, dict) else {
                "id": "x", "object": "chat.completion", "model": body.get("model"),
                "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": reply}}]}
            data = json.dumps(obj).encode()
            self.send_response(status)
            for k, v in (headers[0] if headers else {}).items():
                self.send_header(k, v)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    stub = ChatStub(f"http://127.0.0.1:{server.server_address[1]}/v1")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield stub
    server.shutdown()
    server.server_close()

"""A scripted OpenAI-compatible server over real HTTP on loopback, for tests and benches.

Serves `POST /v1/chat/completions`, `POST /v1/completions` and `GET /v1/models`.
Replies come from a `reply(request_json) -> str` function (default: echo the last user
message); stop sequences cut the reply and report `finish_reason: "stop"`; usage counts
whitespace-separated words. Faults are injectable: a fixed `latency_s`, and a `faults`
function `(call_number) -> status | None` that makes a call answer 429/5xx instead.

    with ScriptedOpenAI(reply=lambda req: "Paris") as fake:
        client = openai.OpenAI(base_url=fake.url, api_key="test")
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # listen() backlog: many clients connect at once in the benches

    def handle_error(self, request, client_address) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):  # a client closing its pool is not news
            super().handle_error(request, client_address)


def echo_last_user_message(request: dict) -> str:
    if "messages" in request:
        return next((m["content"] for m in reversed(request["messages"]) if m["role"] == "user"), "")
    return request.get("prompt", "")


class ScriptedOpenAI:
    def __init__(
        self,
        reply: Callable[[dict], str] = echo_last_user_message,
        *,
        latency_s: float = 0.0,
        faults: Callable[[int], int | None] = lambda call: None,
        models: tuple[str, ...] = ("fake",),
    ):
        self.reply, self.latency_s, self.faults, self.models = reply, latency_s, faults, models
        self.requests: list[dict] = []  # every request body, in arrival order
        self.statuses: list[int] = []
        self.in_flight = self.peak_in_flight = 0  # requests being answered now, and the most at once
        self._lock = threading.Lock()
        self._server = _Server(("127.0.0.1", 0), self._handler_class())
        self.url = f"http://127.0.0.1:{self._server.server_port}/v1"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> ScriptedOpenAI:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _answer(self, path: str, body: dict) -> tuple[int, dict]:
        with self._lock:
            self.requests.append(body)
            call = len(self.requests)
            self.in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        try:
            if self.latency_s:
                time.sleep(self.latency_s)
        finally:
            with self._lock:
                self.in_flight -= 1
        status = self.faults(call)
        if status is not None:
            return status, {"error": {"message": f"scripted fault {status}", "type": "fault", "code": status}}
        if body.get("model") not in self.models:
            return 404, {"error": {"message": f"The model `{body.get('model')}` does not exist.", "code": 404}}
        text = self.reply(body)
        finish_reason = "stop"
        for stop in body.get("stop") or []:
            if stop in text:
                text = text[: text.index(stop)]
        max_tokens = body.get("max_tokens")
        words = text.split(" ")
        if max_tokens is not None and len(words) > max_tokens:
            text, finish_reason = " ".join(words[:max_tokens]), "length"
        prompt_text = json.dumps(body.get("messages") or body.get("prompt", ""))
        usage = {"prompt_tokens": len(prompt_text.split()), "completion_tokens": len(text.split())}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        common = {"id": f"cmpl-{call}", "created": int(time.time()), "model": body["model"], "usage": usage}
        if path.endswith("/chat/completions"):
            choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish_reason}
            return 200, {**common, "object": "chat.completion", "choices": [choice]}
        choice = {"index": 0, "text": text, "finish_reason": finish_reason, "logprobs": None}
        return 200, {**common, "object": "text_completion", "choices": [choice]}

    def _handler_class(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go out separately: avoid 40 ms delayed-ACK stalls

            def log_message(self, *args):  # keep test output clean
                pass

            def _send(self, status: int, payload: dict) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                with fake._lock:
                    fake.statuses.append(status)

            def do_GET(self):
                if self.path.rstrip("/").endswith("/models"):
                    self._send(200, {"object": "list", "data": [{"id": m, "object": "model"} for m in fake.models]})
                else:
                    self._send(404, {"error": {"message": "not found"}})

            def do_POST(self):
                length = int(self.headers.get("content-length") or 0)
                try:
                    body = json.loads(self.rfile.read(length) or b"{}")
                except json.JSONDecodeError:
                    return self._send(400, {"error": {"message": "invalid JSON"}})
                if not self.path.endswith(("/chat/completions", "/completions")):
                    return self._send(404, {"error": {"message": f"no route {self.path}"}})
                self._send(*fake._answer(self.path, body))

        return Handler

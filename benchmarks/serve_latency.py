"""The web demo's latency: per request of K completions, after warm-up, over real HTTP.

  python benchmarks/serve_latency.py --workdir=W [--k=4] [--requests=20]
  python benchmarks/serve_latency.py --compare_stacks --stack_python=/tmp/stacks/bin/python

Default mode: starts `python -m inpainting.serve --workdir=W --port=0 --warmup=K` as its
own process, reports how long until the page is served and until the sampler is warm, then
sends `--requests` completion requests (a validation example or a synthetic photo, the
centre hole, a different caption and seed each) one at a time, then in pairs at the same
time. Prints the median, p90, min and max round trip and the server's sampling time. Last
line: JSON.

--compare_stacks: the same request shape (a 64x64 PNG in, four PNGs out, identical Pillow
work, no model) served by the standard library's ThreadingHTTPServer (what the demo uses),
FastAPI on uvicorn, and Gradio (its two-call HTTP API, as its page uses). `--stack_python`
is an interpreter with fastapi, uvicorn and gradio installed (a separate virtual
environment; the project does not depend on them). Reports start-up (spawn to first
answer), per-request round trip and resident memory of each, and the installed size of
each stack's dependencies.
"""

from __future__ import annotations

import base64
import http.client
import io
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time

import numpy as np
from absl import app, flags
from PIL import Image

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "A trained run (e.g. the 2-step vaegan of the README).")
flags.DEFINE_integer("k", 4, "Completions per request.")
flags.DEFINE_integer("requests", 20, "Requests timed one at a time (and as many in pairs).")
flags.DEFINE_bool("compare_stacks", False, "Compare web stacks instead (no model).")
flags.DEFINE_string("stack_python", None, "Python with fastapi, uvicorn and gradio.")
flags.DEFINE_integer("stack_requests", 200, "Requests per stack.")

CAPTIONS = [
  "a large red star in the middle",
  "a small blue circle in the centre",
  "a large green heart on a striped background",
  "a small yellow triangle",
  "a large purple square next to an orange moon",
]


def _post(port: int, path: str, body: bytes) -> tuple[int, bytes]:
  connection = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
  try:
    connection.request("POST", path, body=body, headers={"Content-Type": "application/json"})
    response = connection.getresponse()
    return response.status, response.read()
  finally:
    connection.close()


def _get(port: int, path: str) -> tuple[int, bytes]:
  connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
  try:
    connection.request("GET", path)
    response = connection.getresponse()
    return response.status, response.read()
  finally:
    connection.close()


def _rss_mib(pid: int) -> float:
  with open(f"/proc/{pid}/status") as f:
    for line in f:
      if line.startswith("VmRSS:"):
        return int(line.split()[1]) / 1024
  return float("nan")


def _summary(seconds: list[float]) -> dict:
  ordered = sorted(seconds)
  return {
    "median_ms": 1000 * statistics.median(ordered),
    "p90_ms": 1000 * ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))],
    "min_ms": 1000 * ordered[0],
    "max_ms": 1000 * ordered[-1],
    "n": len(ordered),
  }


def _load_average() -> list[float]:
  return [round(v, 2) for v in os.getloadavg()]


# --- The demo ----------------------------------------------------------------------------------


def measure_demo(workdir: str, k: int, count: int) -> dict:
  env = dict(
    os.environ,
    JAX_PLATFORMS=os.environ.get("JAX_PLATFORMS", "cpu"),
    PYTHONUNBUFFERED="1",
  )
  command = [
    sys.executable,
    "-m",
    "inpainting.serve",
    f"--workdir={workdir}",
    "--port=0",
    f"--warmup={k}",
  ]
  start = time.perf_counter()
  process = subprocess.Popen(
    command, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
  )
  port = served = ready = None
  try:
    for line in process.stdout:
      found = re.search(r"at http://127\.0\.0\.1:(\d+)/", line)
      if found:
        port, served = int(found.group(1)), time.perf_counter() - start
      if line.startswith("ready:"):
        ready = time.perf_counter() - start
        break
    if port is None or ready is None:
      raise SystemExit(f"the demo did not start: {' '.join(command)}")
    threading.Thread(target=lambda: [None for _ in process.stdout], daemon=True).start()
    status, info = _get(port, "/api/info")
    info = json.loads(info)
    status, page = _get(port, f"/api/examples?limit={count}")
    examples = json.loads(page)["items"]
    rng = np.random.default_rng(0)
    if not examples:  # No data folder here: synthetic photos.
      examples = [
        {"image": _data_url(rng.integers(0, 256, (64, 64, 3), np.uint8)), "captions": [c]}
        for c in CAPTIONS
      ]

    def request(i: int) -> bytes:
      example = examples[i % len(examples)]
      caption = (example["captions"] or CAPTIONS)[0] if i % 2 else CAPTIONS[i % len(CAPTIONS)]
      body = {"image": example["image"], "caption": caption, "k": k, "seed": 1000 + i}
      return json.dumps(body).encode()

    def timed(i: int, out: list, index: int) -> None:
      body = request(i)
      begin = time.perf_counter()
      status, answer = _post(port, "/api/complete", body)
      elapsed = time.perf_counter() - begin
      if status != 200:
        raise SystemExit(f"request failed: {status} {answer[:200]!r}")
      out[index] = (elapsed, json.loads(answer))

    one = [None] * count
    for i in range(count):
      timed(i, one, i)
    pairs = [None] * (2 * count)
    for i in range(count):
      threads = [
        threading.Thread(target=timed, args=(count + 2 * i + j, pairs, 2 * i + j)) for j in range(2)
      ]
      for thread in threads:
        thread.start()
      for thread in threads:
        thread.join()
    rss = _rss_mib(process.pid)
  finally:
    process.terminate()
    process.wait(timeout=30)
  return {
    "workdir": os.path.abspath(workdir),
    "model": info["model"],
    "step": info["step"],
    "k": k,
    "startup_to_url_s": served,
    "startup_to_warm_s": ready,
    "one_at_a_time": _summary([e for e, _ in one]),
    "server_sample_ms_median": statistics.median(a["first"]["sample_ms"] for _, a in one),
    "server_total_ms_median": statistics.median(a["server_ms"] for _, a in one),
    "two_at_a_time": _summary([e for e, _ in pairs]),
    "server_rss_mib": rss,
    "cpu_count": os.cpu_count(),
    "load_average_after": _load_average(),
  }


def _data_url(pixels: np.ndarray) -> str:
  out = io.BytesIO()
  Image.fromarray(pixels).save(out, format="PNG")
  return "data:image/png;base64," + base64.b64encode(out.getvalue()).decode("ascii")


# --- Web stacks ----------------------------------------------------------------------------------

# The same work for every stack: decode the request's PNG, encode four PNGs, answer JSON.
_WORK = """
import base64, io, json
import numpy as np
from PIL import Image

def work(body):
  request = json.loads(body)
  data = base64.b64decode(request["image"].split(",", 1)[1])
  pixels = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
  samples = []
  for i in range(4):
    out = io.BytesIO()
    Image.fromarray(np.roll(pixels, i, axis=1)).save(out, format="PNG")
    samples.append("data:image/png;base64," + base64.b64encode(out.getvalue()).decode())
  return json.dumps({"samples": samples})
"""

_STACKS = {
  "stdlib ThreadingHTTPServer": """
import http.server, sys
class Handler(http.server.BaseHTTPRequestHandler):
  protocol_version = "HTTP/1.1"
  def log_message(self, *args): pass
  def _send(self, body):
    self.send_response(200)
    self.send_header("Content-Type", "application/json")
    self.send_header("Content-Length", str(len(body)))
    self.end_headers()
    self.wfile.write(body)
  def do_GET(self): self._send(b"{}")
  def do_POST(self):
    body = self.rfile.read(int(self.headers["Content-Length"]))
    self._send(work(body).encode())
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
""",
  "FastAPI + uvicorn": """
import sys
import uvicorn
from fastapi import FastAPI
from fastapi.responses import Response
from pydantic import BaseModel
class Request(BaseModel):
  image: str
api = FastAPI()
@api.get("/")
def root(): return {}
@api.post("/api/complete")
def complete(request: Request):  # A plain def runs in the thread pool, as a model call must.
  return Response(work(request.model_dump_json()), media_type="application/json")
uvicorn.run(api, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
""",
  "Gradio": """
import sys
import gradio as gr
demo = gr.Interface(lambda text: work(text), gr.Textbox(), gr.Textbox(), api_name="complete")
demo.launch(server_name="127.0.0.1", server_port=int(sys.argv[1]), quiet=True)
""",
}

# The distributions each stack adds (their dependency closure is measured).
_STACK_PACKAGES = {
  "stdlib ThreadingHTTPServer": [],
  "FastAPI + uvicorn": ["fastapi", "uvicorn"],
  "Gradio": ["gradio"],
}

_CLOSURE = """
import importlib.metadata as md, json, re, sys
def closure(names):
  seen, todo = set(), list(names)
  while todo:
    name = re.split(r"[ ;<>=!~\\[(]", todo.pop().strip())[0].lower().replace("_", "-")
    if not name or name in seen:
      continue
    try:
      dist = md.distribution(name)
    except md.PackageNotFoundError:
      continue
    seen.add(name)
    for requirement in dist.requires or []:
      if "extra ==" not in requirement:
        todo.append(requirement)
  return seen
out = {}
for stack, names in json.loads(sys.argv[1]).items():
  found = closure(names)
  size = 0
  for name in found:
    for file in md.distribution(name).files or []:
      try:
        size += file.locate().stat().st_size
      except OSError:
        pass
  out[stack] = {"packages": len(found), "mib": size / 2**20}
print(json.dumps(out))
"""


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _gradio_call(port: int, body: bytes) -> None:
  status, answer = _post(
    port, "/gradio_api/call/complete", json.dumps({"data": [body.decode()]}).encode()
  )
  if status != 200:
    raise RuntimeError(f"gradio call: {status} {answer[:200]!r}")
  event = json.loads(answer)["event_id"]
  status, stream = _get(port, f"/gradio_api/call/complete/{event}")
  if status != 200 or b"event: complete" not in stream:
    raise RuntimeError(f"gradio result: {status} {stream[:200]!r}")


def measure_stack(python: str, name: str, code: str, count: int) -> dict:
  port = _free_port()
  with tempfile.TemporaryDirectory() as folder:
    script = os.path.join(folder, "server.py")
    with open(script, "w") as f:
      f.write(_WORK + textwrap.dedent(code))
    env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False", HF_HUB_OFFLINE="1")
    start = time.perf_counter()
    process = subprocess.Popen(
      [python, script, str(port)],
      cwd=folder,
      env=env,
      stdout=subprocess.DEVNULL,
      stderr=subprocess.DEVNULL,
    )
    try:
      while True:
        if process.poll() is not None:
          raise RuntimeError(f"{name} exited with status {process.returncode}")
        try:
          if _get(port, "/")[0] == 200:
            break
        except OSError:
          time.sleep(0.01)
      startup = time.perf_counter() - start
      body = json.dumps(
        {"image": _data_url(np.random.default_rng(0).integers(0, 256, (64, 64, 3), np.uint8))}
      ).encode()
      times = []
      for i in range(count + 10):
        begin = time.perf_counter()
        if name == "Gradio":
          _gradio_call(port, body)
        else:
          status, answer = _post(port, "/api/complete", body)
          assert status == 200 and len(json.loads(answer)["samples"]) == 4
        if i >= 10:  # The first few warm the stack's own caches.
          times.append(time.perf_counter() - begin)
      rss = _rss_mib(process.pid)
    finally:
      process.terminate()
      process.wait(timeout=30)
  return {"startup_s": startup, "request": _summary(times), "rss_mib": rss}


def compare_stacks(python: str, count: int) -> dict:
  namespace: dict = {}
  exec(_WORK, namespace)  # noqa: S102  The same work in-process: the floor every stack adds to.
  body = json.dumps(
    {"image": _data_url(np.random.default_rng(0).integers(0, 256, (64, 64, 3), np.uint8))}
  )
  times = []
  for i in range(count + 10):
    begin = time.perf_counter()
    namespace["work"](body)
    if i >= 10:  # As for the stacks: the first calls warm caches.
      times.append(time.perf_counter() - begin)
  sizes = json.loads(
    subprocess.run(
      [python, "-c", _CLOSURE, json.dumps(_STACK_PACKAGES)],
      capture_output=True,
      text=True,
      check=True,
    ).stdout
  )
  result = {"work_in_process_ms": 1000 * statistics.median(times), "stacks": {}}
  for name, code in _STACKS.items():
    measured = measure_stack(python, name, code, count)
    measured["overhead_ms"] = measured["request"]["median_ms"] - result["work_in_process_ms"]
    measured.update(sizes[name])
    result["stacks"][name] = measured
    print(
      f"{name:28s} start-up {measured['startup_s']:.2f} s, request {measured['request']['median_ms']:.2f} ms "
      f"(overhead {measured['overhead_ms']:.2f} ms), RSS {measured['rss_mib']:.0f} MiB, "
      f"{measured['packages']} packages / {measured['mib']:.0f} MiB installed",
      flush=True,
    )
  result["load_average_after"] = _load_average()
  return result


def main(argv):
  del argv
  if FLAGS.compare_stacks:
    if not FLAGS.stack_python:
      raise app.UsageError("--compare_stacks needs --stack_python")
    print(json.dumps(compare_stacks(FLAGS.stack_python, FLAGS.stack_requests)))
    return
  if not FLAGS.workdir:
    raise app.UsageError("--workdir is required")
  result = measure_demo(FLAGS.workdir, FLAGS.k, FLAGS.requests)
  one, two = result["one_at_a_time"], result["two_at_a_time"]
  print(
    f"{result['model']} step {result['step']}, K={result['k']}: page served after "
    f"{result['startup_to_url_s']:.1f} s, warm after {result['startup_to_warm_s']:.1f} s; "
    f"one request {one['median_ms']:.0f} ms median (p90 {one['p90_ms']:.0f}, sampling "
    f"{result['server_sample_ms_median']:.0f} ms); two at once {two['median_ms']:.0f} ms median "
    f"each (p90 {two['p90_ms']:.0f}); load average after {result['load_average_after']}"
  )
  print(json.dumps(result))


if __name__ == "__main__":
  app.run(main)

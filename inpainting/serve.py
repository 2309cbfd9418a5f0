"""The interactive web demo: complete a border under a caption in the browser.

  python -m inpainting.serve --workdir=W [--port=7860] [--host=127.0.0.1] [--step=N]

prints the page's URL. A person picks a validation example of the run's data or uploads a
photo (centre-cropped and resized to 64x64 as everywhere else, inpainting/images.py), draws
the hole, types a caption, chooses K and a seed and gets K completions with their time; a
second caption completes the same border with the same seed; for a family with a latent
(`Family.interpolate`) a slider walks between two of the samples. A run that reads a
conversation (`data.text_source` other than caption) takes the caption as the context and
adds question/answer turns one at a time, with one completion per turn.

The stack is the standard library's `ThreadingHTTPServer` plus one static page
(inpainting/static/: HTML, a canvas, plain JavaScript; nothing from a CDN). It was chosen
over FastAPI/uvicorn and Gradio by measurement (README, "Web demo"): it starts fastest, adds
no dependency, and its per-request overhead is noise beside the sampler's.

The run is loaded and sampled by inpainting/inference.py, exactly as `inpaint` and
`evaluate` do, through the family contract; nothing here imports the trainer, grain or a
family by name. Uploads stay in memory and nothing is written to disk.

Each request is independent (the page sends the 64x64 image back with every request), so
concurrent requests share nothing but the read-only model; JAX's compiled samplers are
thread-safe. The sampler compiles once per K: the start-up K values in a background thread
while the page is already served (the page shows "warming up"), any other K on first use.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import functools
import http.server
import io
import json
import os
import re
import socketserver
import sys
import threading
import time
import traceback
import urllib.parse
from typing import Any

from absl import app, flags, logging

FLAGS = flags.FLAGS

MAX_K = 16  # Completions per request: 1..MAX_K.
MAX_SEED = 2**31 - 1
MAX_CAPTION_CHARS = 500
MAX_TURNS = 10  # Question/answer turns in one conversation request.
MAX_UPLOAD_BYTES = 10 * 1024 * 1024  # A photo upload's body.
MAX_JSON_BYTES = 1024 * 1024  # Other requests: a 64x64 PNG as a data URL is ~20 KB.
INTERPOLATION_FRAMES = 9  # Slider positions, computed in one call.
STATIC_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
_CONTENT_TYPES = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".png": "image/png",
}
# The page loads nothing from elsewhere; images are data: URLs.
_CSP = "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'"


def define_flags() -> None:
  """Defined only when run as a program, so importing this module adds no global flags."""
  flags.DEFINE_string("workdir", None, "A trained run's workdir.")
  flags.DEFINE_integer("port", 7860, "Port to listen on (0 = any free port).")
  flags.DEFINE_string(
    "host", "127.0.0.1", "Address to bind. Anything but 127.0.0.1 exposes the demo (README)."
  )
  flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).")
  flags.DEFINE_list("warmup", ["4"], "K values whose sampler compiles at start-up.")
  flags.DEFINE_integer("examples", 48, "Validation examples offered on the page.")
  flags.mark_flag_as_required("workdir")


class RequestError(ValueError):
  """A bad request: shown on the page as one line; `status` is the HTTP status."""

  def __init__(self, message: str, status: int = 400):
    super().__init__(message)
    self.status = status


# --- Images in and out -----------------------------------------------------------------------


def png_data_url(pixels) -> str:
  """uint8 [H, W, 3] -> "data:image/png;base64,..."."""
  from PIL import Image  # noqa: PLC0415

  out = io.BytesIO()
  Image.fromarray(pixels).save(out, format="PNG")
  return "data:image/png;base64," + base64.b64encode(out.getvalue()).decode("ascii")


def decode_image(data: bytes):
  """An uploaded file's bytes -> uint8 [64, 64, 3] (images.load: pixel cap before decoding,
  truncation checked, centre crop and Lanczos resize)."""
  from inpainting import images  # noqa: PLC0415

  if not data:
    raise RequestError("the upload is empty: choose an image file")
  try:
    return images.load(data, grayscale="convert")
  except images.ImageError as error:
    detail = re.sub(r" ?<_io\.BytesIO object at 0x[0-9a-f]+>", "", str(error))
    if error.reason == images.TOO_LARGE or "DecompressionBomb" in detail:
      raise RequestError(
        f"the image has too many pixels to decode ({detail}; the limit of "
        f"{images.MAX_PIXELS:,} pixels is checked before decoding)",
        413,
      ) from None
    if "UnidentifiedImageError" in detail:
      raise RequestError(
        "not an image: the file is not in a format that can be read (PNG, JPEG, WebP, GIF, "
        "BMP, TIFF...)"
      ) from None
    raise RequestError(f"the image is damaged or truncated and cannot be read: {detail}") from None


def image_from_data_url(text: Any):
  """A request's "image" field (a data: URL, as the page sends it) -> uint8 [64, 64, 3]."""
  if not isinstance(text, str) or not text:
    raise RequestError("no image: pick an example or upload a photo first")
  _, comma, payload = text.partition(",")
  if not text.startswith("data:") or not comma or ";base64" not in text[: len(text) - len(payload)]:
    raise RequestError("the image must be a base64 data: URL")
  try:
    data = base64.b64decode(payload, validate=True)
  except (binascii.Error, ValueError):
    raise RequestError("the image is not valid base64") from None
  return decode_image(data)


# --- Request fields --------------------------------------------------------------------------


def _integer(request: dict, name: str, default: int, low: int, high: int, label: str) -> int:
  value = request.get(name, default)
  if isinstance(value, str) and value.strip().lstrip("-").isdigit():
    value = int(value)
  if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
    raise RequestError(f"{label} must be an integer from {low} to {high} (got {value!r})")
  return value


def parse_box(value: Any) -> tuple[int, int, int, int]:
  """null (the centre 32x32) or [x, y, w, h] in pixels of the 64x64 image."""
  from inpainting import images, masks  # noqa: PLC0415

  size = images.SIZE
  if value is None:
    return masks.center_box(size, size)
  if (
    not isinstance(value, list | tuple)
    or len(value) != 4
    or any(isinstance(v, bool) or not isinstance(v, int) for v in value)
  ):
    raise RequestError(f"the hole must be four whole numbers x, y, w, h (got {value!r})")
  x, y, w, h = value
  if w <= 0 or h <= 0:
    raise RequestError(f"the hole has zero area (w={w}, h={h}): draw a box on the image")
  if x < 0 or y < 0 or x + w > size or y + h > size:
    raise RequestError(
      f"the hole x={x}, y={y}, w={w}, h={h} lies outside the {size}x{size} image "
      f"(need x, y >= 0, x + w <= {size}, y + h <= {size})"
    )
  return x, y, w, h


@dataclasses.dataclass(frozen=True)
class Completion:
  """A parsed /api/complete or /api/interpolate request."""

  pixels: Any  # uint8 [64, 64, 3]
  box: tuple[int, int, int, int]
  caption: str
  second_caption: str
  k: int
  seed: int
  dialogue: tuple[tuple[str, str], ...] = ()  # (question, answer) turns so far.


def parse_dialogue(value: Any) -> tuple[tuple[str, str], ...]:
  """A request's `dialogue`: a list of {"question": text, "answer": text} turns."""
  if value is None:
    return ()
  if not isinstance(value, list):
    raise RequestError("dialogue must be a list of question/answer turns")
  if len(value) > MAX_TURNS:
    raise RequestError(f"the conversation has {len(value)} turns, at most {MAX_TURNS}")
  turns = []
  for number, turn in enumerate(value, 1):
    parts = [turn.get(name) if isinstance(turn, dict) else None for name in ("question", "answer")]
    if not all(isinstance(p, str) and p.strip() for p in parts):
      raise RequestError(f"turn {number} needs a question and an answer")
    if sum(map(len, parts)) > MAX_CAPTION_CHARS:
      raise RequestError(f"turn {number} is too long (at most {MAX_CAPTION_CHARS} characters)")
    turns.append((parts[0].strip(), parts[1].strip()))
  return tuple(turns)


# --- The demo (everything but HTTP) ----------------------------------------------------------


class Demo:
  """A loaded run and what the page asks of it. Thread-safe: requests share only the
  read-only model and the per-K compile bookkeeping."""

  def __init__(self, trained, max_examples: int = 48):
    self.run = trained
    self.needs_caption = bool(trained.config.model.get("use_caption", True))
    self.has_latent = getattr(trained.family, "interpolate", None) is not None
    from inpainting import batching  # noqa: PLC0415

    self.reads_conversation = batching.reads_conversation(trained.config.data)
    self._examples, self.examples_note = _read_examples(
      trained.config.data.get("dir", ""), max_examples
    )
    self._lock = threading.Lock()
    self._compile_locks: dict[tuple[str, int], threading.Lock] = {}
    self._compiled: dict[tuple[str, int], float] = {}  # (what, K) -> seconds it took
    self._warming: set[tuple[str, int]] = set()

  # -- information -----------------------------------------------------------------------

  def info(self) -> dict[str, Any]:
    from inpainting import images  # noqa: PLC0415

    with self._lock:
      compiled = sorted(k for what, k in self._compiled if what == "sample")
      warming = sorted(k for what, k in self._warming if what == "sample")
    return {
      "model": self.run.name,
      "step": self.run.step,
      "workdir": self.run.workdir,
      "needs_caption": self.needs_caption,
      "has_latent": self.has_latent,
      "reads_conversation": self.reads_conversation,
      "max_turns": MAX_TURNS,
      "max_k": MAX_K,
      "image_size": images.SIZE,
      "resize_note": images.RESIZE_NOTE,
      "max_upload_bytes": MAX_UPLOAD_BYTES,
      "max_pixels": images.MAX_PIXELS,
      "max_caption_chars": MAX_CAPTION_CHARS,
      "interpolation_frames": INTERPOLATION_FRAMES,
      "examples_total": len(self._examples),
      "examples_note": self.examples_note,
      "compiled_k": compiled,
      "warming_k": warming,
    }

  def examples(self, offset: int = 0, limit: int = 24) -> dict[str, Any]:
    chosen = self._examples[max(offset, 0) : max(offset, 0) + max(min(limit, 64), 0)]
    return {
      "total": len(self._examples),
      "note": self.examples_note,
      "items": [
        {"index": i, "id": e.id, "image": png_data_url(e.image), "captions": list(e.captions)}
        for i, e in chosen
      ],
    }

  def upload(self, data: bytes) -> dict[str, Any]:
    from PIL import Image  # noqa: PLC0415

    pixels = decode_image(data)
    try:  # Only the header: images.load has already decoded the whole file successfully.
      with Image.open(io.BytesIO(data)) as opened:
        width, height = opened.size
    except Exception:  # noqa: BLE001
      width = height = None
    return {"image": png_data_url(pixels), "width": width, "height": height}

  # -- sampling --------------------------------------------------------------------------

  def parse(self, request: Any) -> Completion:
    if not isinstance(request, dict):
      raise RequestError("the request must be a JSON object")
    captions = []
    for name in ("caption", "second_caption"):
      value = request.get(name) or ""
      if not isinstance(value, str):
        raise RequestError(f"{name} must be text")
      if len(value) > MAX_CAPTION_CHARS:
        raise RequestError(
          f"the caption is too long ({len(value)} characters, at most {MAX_CAPTION_CHARS})"
        )
      captions.append(value.strip())
    dialogue = parse_dialogue(request.get("dialogue"))
    if dialogue and not self.reads_conversation:
      raise RequestError("this model reads one caption, not a conversation")
    if self.needs_caption and not captions[0] and not dialogue:
      raise RequestError("this model is conditioned on captions: type a caption first")
    k = _integer(request, "k", 4, 1, MAX_K, "K (the number of completions)")
    seed = _integer(request, "seed", 0, 0, MAX_SEED, "the seed")
    box = parse_box(request.get("box"))
    pixels = image_from_data_url(request.get("image"))
    return Completion(pixels, box, captions[0], captions[1], k, seed, dialogue)

  def _text(self, completion: Completion, caption: str) -> str:
    """What the model reads: the caption, or for a conversation reader the context
    caption and the turns so far, as its data.text_source reads them."""
    if not self.reads_conversation:
      return caption
    from inpainting import batching, records  # noqa: PLC0415

    example = records.Example(
      id="input",
      image=completion.pixels,
      captions=[],
      context_caption=caption or " ",  # conversation_text refuses no context at all.
      dialogue=[{"question": q, "answer": a} for q, a in completion.dialogue],
    )
    source = batching.text_source_of(self.run.config.data)
    return batching.conversation_text(
      example, batching.text_at_turn(source, len(completion.dialogue))
    )

  def _batch(self, completion: Completion, caption: str):
    from inpainting import masks  # noqa: PLC0415

    hole = masks.make(masks.parse("box:{},{},{},{}".format(*completion.box)))
    return self.run.batch_from_image(completion.pixels, hole, [caption])

  def _compiled_call(self, what: str, k: int, fn):
    """fn() under a per-(what, K) lock the first time, so each sampler compiles once even
    when requests race; returns (result, seconds, whether this call compiled)."""
    key = (what, k)
    if key in self._compiled:
      start = time.perf_counter()
      return fn(), time.perf_counter() - start, False
    with self._lock:
      lock = self._compile_locks.setdefault(key, threading.Lock())
    with lock:
      start = time.perf_counter()
      if key in self._compiled:
        return fn(), time.perf_counter() - start, False
      with self._lock:
        self._warming.add(key)
      try:
        result = fn()
      finally:
        with self._lock:
          self._warming.discard(key)
      seconds = time.perf_counter() - start
      with self._lock:
        self._compiled[key] = seconds
      return result, seconds, True

  def _complete_one(self, completion: Completion, caption: str) -> dict[str, Any]:
    from inpainting import batching, images  # noqa: PLC0415

    text = self._text(completion, caption)
    batch = self._batch(completion, text if text.strip() else "")
    samples, seconds, compiled = self._compiled_call(
      "sample", completion.k, lambda: self.run.sample(batch, completion.k, completion.seed)
    )
    pixels = images.to_uint8(samples[:, 0])
    return {
      "caption": batching.readable(text),
      "turn": len(completion.dialogue) if self.reads_conversation else None,
      "samples": [png_data_url(p) for p in pixels],
      "grid": png_data_url(self.run.visualize(batch, samples)),
      "sample_ms": round(seconds * 1000, 1),
      "per_sample_ms": round(seconds * 1000 / completion.k, 1),
      "compiled": compiled,
    }

  def complete(self, request: Any) -> dict[str, Any]:
    """K completions of the request's image and hole under its caption (and, when given,
    under its second caption with the same seed)."""
    start = time.perf_counter()
    completion = self.parse(request)
    x, y, w, h = completion.box
    holed = completion.pixels.copy()
    holed[y : y + h, x : x + w] = 128  # The model's view: the hole is 0 in [-1, 1].
    out = {
      "k": completion.k,
      "seed": completion.seed,
      "box": list(completion.box),
      "input": png_data_url(completion.pixels),
      "input_with_hole": png_data_url(holed),
      "first": self._complete_one(completion, completion.caption),
    }
    if completion.second_caption:
      out["second"] = self._complete_one(completion, completion.second_caption)
    out["server_ms"] = round((time.perf_counter() - start) * 1000, 1)
    return out

  def interpolate(self, request: Any) -> dict[str, Any]:
    """Frames between samples a and b of a request (the latent mixed by the family)."""
    import numpy as np  # noqa: PLC0415

    from inpainting import images  # noqa: PLC0415

    if not self.has_latent:
      raise RequestError("this model has no latent z to interpolate")
    completion = self.parse(request)
    a = _integer(request, "a", 0, 0, completion.k - 1, "sample a")
    b = _integer(request, "b", 1 if completion.k > 1 else 0, 0, completion.k - 1, "sample b")
    t = np.linspace(0.0, 1.0, INTERPOLATION_FRAMES)
    # Variance-preserving mix of the two Gaussian draws; the ends are the samples exactly.
    weights = np.zeros((INTERPOLATION_FRAMES, completion.k), np.float32)
    weights[:, a] += np.cos(t * np.pi / 2)
    weights[:, b] += np.sin(t * np.pi / 2)
    weights[0] = 0
    weights[0, a] = 1
    weights[-1] = 0
    weights[-1, b] = 1
    batch = self._batch(completion, completion.caption)
    run = self.run

    def call():
      fn = _interpolator(run.graphdef, run.family, run.hparams, completion.k)
      device_batch = {key: np.asarray(batch[key]) for key in run.family.batch.device_keys}
      return np.asarray(fn(run.state, device_batch, _key(completion.seed), weights))

    frames, seconds, compiled = self._compiled_call("interpolate", completion.k, call)
    return {
      "a": a,
      "b": b,
      "t": [round(float(v), 4) for v in t],
      "frames": [png_data_url(p) for p in images.to_uint8(frames[:, 0])],
      "ms": round(seconds * 1000, 1),
      "compiled": compiled,
    }

  # -- warm-up ---------------------------------------------------------------------------

  def warm_up(self, ks: list[int], log=print) -> None:
    """Compiles the sampler (and the interpolation) for each K on a dummy request."""
    import numpy as np  # noqa: PLC0415

    from inpainting import images  # noqa: PLC0415

    size = images.SIZE
    dummy = {
      "image": png_data_url(np.full((size, size, 3), 127, np.uint8)),
      "caption": "warm up",
      "box": None,
    }
    for k in ks:
      start = time.perf_counter()
      self.complete(dict(dummy, k=k))
      if self.has_latent and k > 1:
        self.interpolate(dict(dummy, k=k, a=0, b=1))
      log(f"ready: the sampler for K={k} compiled in {time.perf_counter() - start:.1f} s")


def _key(seed: int):
  import jax  # noqa: PLC0415

  return jax.random.PRNGKey(seed)


@functools.lru_cache(maxsize=8)
def _interpolator(graphdef, family, hparams, num_samples: int):
  """The family's jitted latent interpolation, one per model structure and K (like
  inference's samplers)."""
  import jax  # noqa: PLC0415
  from flax import nnx  # noqa: PLC0415

  def pure(state, batch, rng, weights):
    bundle = nnx.merge(graphdef, state["model"])
    return family.interpolate(bundle, batch, rng, weights, num_samples, hparams)

  return jax.jit(pure)


def _read_examples(data_dir: str, limit: int):
  """The first `limit` validation records of the run's data, read directly (no grain):
  [(index, records.Example)] and a note for the page when there are none."""
  from inpainting import records  # noqa: PLC0415

  paths = records.shard_paths(data_dir, "validation") if data_dir else []
  if not paths:
    where = data_dir or "(none recorded)"
    return [], f"the run's data folder {where} has no validation records here: upload a photo"
  from array_record.python.array_record_module import ArrayRecordReader  # noqa: PLC0415

  out = []
  for path in paths:
    reader = ArrayRecordReader(path, "readahead_buffer_size:0")
    try:
      count = min(reader.num_records(), limit - len(out))
      for record in reader.read(list(range(count))):
        out.append((len(out), records.decode(record)))
    finally:
      reader.close()
    if len(out) >= limit:
      break
  return out, ""


# --- HTTP ------------------------------------------------------------------------------------


class Handler(http.server.BaseHTTPRequestHandler):
  """Routes: GET / and /static/*, GET /api/info, GET /api/examples?offset=&limit=,
  POST /api/upload (the raw file), POST /api/complete and /api/interpolate (JSON)."""

  protocol_version = "HTTP/1.1"
  server_version = "inpainting-demo"
  demo: Demo  # Set on the subclass made by `make_server`.
  static_files: dict[str, str]

  def log_message(self, format: str, *args) -> None:  # noqa: A002
    pass  # One line per API call is printed by `_respond` instead.

  def _send(self, status: int, body: bytes, content_type: str, close: bool = False) -> None:
    self.send_response(status)
    self.send_header("Content-Type", content_type)
    self.send_header("Content-Length", str(len(body)))
    self.send_header("Content-Security-Policy", _CSP)
    self.send_header("X-Content-Type-Options", "nosniff")
    self.send_header("Cache-Control", "no-store")
    if close:
      self.send_header("Connection", "close")
      self.close_connection = True
    self.end_headers()
    if self.command != "HEAD":
      self.wfile.write(body)

  def _json(self, status: int, payload: dict, close: bool = False) -> None:
    self._send(status, json.dumps(payload).encode("utf-8"), "application/json", close)

  def _respond(self, fn) -> None:
    start = time.perf_counter()
    try:
      status, payload = 200, fn()
    except RequestError as error:
      status, payload = error.status, {"error": str(error)}
    except Exception as error:  # noqa: BLE001  A bug must not take the server down.
      traceback.print_exc()
      status, payload = (
        500,
        {"error": f"internal error ({type(error).__name__}); see the server log"},
      )
    close = status == 413 or getattr(self, "_unread_body", False)
    self._json(status, payload, close=close)
    ms = (time.perf_counter() - start) * 1000
    detail = f" ({payload['error']})" if "error" in payload else ""
    self.log(f"{self.command} {self.path.split('?')[0]} {status} {ms:.0f} ms{detail}")

  def _body(self, limit: int) -> bytes:
    length = self.headers.get("Content-Length")
    if length is None or not length.strip().isdigit():
      self._unread_body = True
      raise RequestError("the request needs a Content-Length", 411)
    length = int(length)
    if length > limit:
      self._unread_body = True  # Not read: the connection is closed after the answer.
      raise RequestError(
        f"the upload is too large ({length / 1e6:.1f} MB; the limit is {limit / 1e6:.0f} MB)", 413
      )
    return self.rfile.read(length)

  def _json_body(self) -> Any:
    body = self._body(MAX_JSON_BYTES)
    try:
      return json.loads(body)
    except ValueError:
      raise RequestError("the request body is not valid JSON") from None

  def do_GET(self) -> None:  # noqa: N802
    url = urllib.parse.urlsplit(self.path)
    if url.path == "/api/info":
      self._respond(self.demo.info)
    elif url.path == "/api/examples":
      query = urllib.parse.parse_qs(url.query)

      def examples():
        try:
          offset = int(query.get("offset", ["0"])[0])
          limit = int(query.get("limit", ["24"])[0])
        except ValueError:
          raise RequestError("offset and limit must be integers") from None
        return self.demo.examples(offset, limit)

      self._respond(examples)
    else:
      name = "index.html" if url.path in ("/", "/index.html") else url.path.removeprefix("/static/")
      path = self.static_files.get(name)  # Only the files shipped: no path is built from input.
      if path is None:
        self._json(404, {"error": f"no such page: {url.path}"})
        return
      with open(path, "rb") as f:
        body = f.read()
      self._send(
        200, body, _CONTENT_TYPES.get(os.path.splitext(name)[1], "application/octet-stream")
      )

  do_HEAD = do_GET  # noqa: N815

  def do_POST(self) -> None:  # noqa: N802
    self._unread_body = False
    path = urllib.parse.urlsplit(self.path).path
    routes = {
      "/api/upload": lambda: self.demo.upload(self._body(MAX_UPLOAD_BYTES)),
      "/api/complete": lambda: self.demo.complete(self._json_body()),
      "/api/interpolate": lambda: self.demo.interpolate(self._json_body()),
    }
    if path not in routes:
      self._unread_body = True
      self._json(404, {"error": f"no such endpoint: {path}"}, close=True)
      return
    self._respond(routes[path])


class Server(http.server.ThreadingHTTPServer):
  daemon_threads = True  # Open keep-alive connections do not block shutdown.
  allow_reuse_address = True


def _stderr(line: str) -> None:
  print(line, file=sys.stderr, flush=True)


def make_server(demo: Demo, host: str = "127.0.0.1", port: int = 0, log=_stderr) -> Server:
  """A server (not yet serving) for `demo`; port 0 picks a free port; `log` gets one line
  per API call."""
  static = {
    name: os.path.join(STATIC_DIR, name)
    for name in os.listdir(STATIC_DIR)
    if os.path.splitext(name)[1] in _CONTENT_TYPES
  }
  handler = type(
    "DemoHandler", (Handler,), {"demo": demo, "static_files": static, "log": staticmethod(log)}
  )
  return Server((host, port), handler)


def url_of(server: socketserver.TCPServer) -> str:
  host, port = server.server_address[:2]
  shown = host if host not in ("0.0.0.0", "::") else "127.0.0.1"
  if ":" in shown:
    shown = f"[{shown}]"
  return f"http://{shown}:{port}/"


def serve(
  workdir: str, *, host: str, port: int, step: int | None, warmup: list[int], examples: int
):
  from inpainting import inference  # noqa: PLC0415
  from inpainting.errors import UserError  # noqa: PLC0415

  bad = [k for k in warmup if not 1 <= k <= MAX_K]
  if bad:
    raise UserError(f"--warmup values must be from 1 to {MAX_K}: {bad}")
  trained = inference.load_run(workdir, step)
  demo = Demo(trained, examples)
  try:
    server = make_server(demo, host, port)
  except OSError as error:
    raise UserError(f"cannot listen on {host}:{port}: {error}; choose another --port") from None
  print(
    f"demo of {trained.workdir} ({trained.name}, step {trained.step}) at {url_of(server)}",
    flush=True,
  )
  if host not in ("127.0.0.1", "localhost", "::1"):
    print(
      f"warning: listening on {host}: anyone who can reach this address can use the demo "
      "(no login, no TLS); see the README",
      flush=True,
    )
  if warmup:
    print(f"warming up: compiling the sampler for K={','.join(map(str, warmup))}", flush=True)
    threading.Thread(
      target=lambda: demo.warm_up(warmup, log=lambda line: print(line, flush=True)), daemon=True
    ).start()
  try:
    server.serve_forever(poll_interval=0.2)
  except KeyboardInterrupt:
    print("stopped", flush=True)
  finally:
    server.server_close()


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  from inpainting.errors import UserError  # noqa: PLC0415
  from inpainting.logs import quiet_libraries  # noqa: PLC0415

  quiet_libraries()
  logging.set_verbosity(logging.ERROR)  # Orbax's restore notes; errors still show.
  try:
    warmup = [int(k) for k in FLAGS.warmup]
  except ValueError:
    print(f"error: --warmup must be integers: {FLAGS.warmup}", file=sys.stderr)
    sys.exit(2)
  try:
    serve(
      FLAGS.workdir,
      host=FLAGS.host,
      port=FLAGS.port,
      step=FLAGS.step,
      warmup=warmup,
      examples=FLAGS.examples,
    )
  except UserError as error:
    print(f"error: {error}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  define_flags()
  app.run(main)

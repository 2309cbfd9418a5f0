"""The web demo's request handling (inpainting/serve.py), over real HTTP on a free port.

- a completion keeps the border, fills the hole, and equals `Run.sample` of the same
  request; a second caption samples the same border and seed; the interpolation's ends
  are the two samples;
- every bad input (not an image, truncated, too many pixels, too large an upload, empty
  caption, a box outside the image or of zero area, K outside 1..16, bad JSON) is a
  one-line message, the server stays up and a valid request still works;
- two requests at the same time both get the answers they get one at a time;
- nothing is written to disk; only the shipped static files are served, and they load
  nothing from another host; the demo imports neither the trainer, grain nor data_prep.

The smoke run that every demo test reads is trained once per session (`demo_workdir`).
"""

from __future__ import annotations

import ast
import base64
import http.client
import io
import json
import os
import struct
import subprocess
import sys
import threading
import zlib

import numpy as np
import pytest
from PIL import Image

from inpainting import images, inference, masks, serve

_SMOKE_RUN: dict[str, str] = {}


def smoke_workdir(tmp_path_factory) -> str:
  """A 4-step vaegan smoke run (one checkpoint) on the smoke config's synthetic scenes,
  trained once per test session and shared with tests/test_browser_demo.py."""
  if "workdir" not in _SMOKE_RUN:
    from configs import smoke  # noqa: PLC0415
    from data_prep import bootstrap  # noqa: PLC0415
    from inpainting import train  # noqa: PLC0415  (tests may import the trainer; serve never)

    root = tmp_path_factory.mktemp("demo_run")
    config = smoke.get_config()
    config.data.dir = bootstrap.resolve_data_dir(smoke.get_config(), str(root))
    config.num_train_steps = 4
    config.checkpoint_every_steps = 4
    config.log_every_steps = 2
    config.eval_every_steps = 100  # Never: the run is only read back.
    config.mesh.num_devices = 1
    workdir = str(root / "run")
    train.train_and_evaluate(config, workdir)
    _SMOKE_RUN["workdir"] = workdir
  return _SMOKE_RUN["workdir"]


def painter_workdir(tmp_path_factory) -> str:
  """A 3-step multi-turn `painter` run on the smoke scenes, trained once per session and
  shared with tests/test_browser_demo.py."""
  if "painter" not in _SMOKE_RUN:
    from configs import smoke  # noqa: PLC0415
    from data_prep import bootstrap  # noqa: PLC0415
    from inpainting import train  # noqa: PLC0415
    from tests.test_painter import tiny_run_config  # noqa: PLC0415

    root = tmp_path_factory.mktemp("painter_run")
    config = tiny_run_config(bootstrap.resolve_data_dir(smoke.get_config(), str(root)))
    config.num_train_steps = config.checkpoint_every_steps = 3
    config.eval_every_steps = 100  # Never: the run is only read back.
    config.mesh.num_devices = 1
    workdir = str(root / "run")
    train.train_and_evaluate(config, workdir)
    _SMOKE_RUN["painter"] = workdir
  return _SMOKE_RUN["painter"]


@pytest.fixture(scope="module")
def demo_workdir(tmp_path_factory):
  return smoke_workdir(tmp_path_factory)


@pytest.fixture(scope="module")
def demo(demo_workdir):
  return serve.Demo(inference.load_run(demo_workdir), max_examples=8)


@pytest.fixture(scope="module")
def server(demo):
  """The demo served on a free port of 127.0.0.1 in a thread; yields (host, port)."""
  httpd = serve.make_server(demo, "127.0.0.1", 0, log=lambda line: None)
  thread = threading.Thread(target=httpd.serve_forever, daemon=True)
  thread.start()
  yield httpd.server_address[:2]
  httpd.shutdown()
  httpd.server_close()


# --- Helpers ---------------------------------------------------------------------------------


def call(server, method, path, body=None, headers=None):
  """(status, decoded JSON or raw bytes) of one request on a new connection."""
  connection = http.client.HTTPConnection(*server, timeout=120)
  try:
    connection.request(method, path, body=body, headers=headers or {})
    response = connection.getresponse()
    data = response.read()
    if response.getheader("Content-Type", "").startswith("application/json"):
      return response.status, json.loads(data)
    return response.status, data
  finally:
    connection.close()


def complete(server, request):
  return call(
    server, "POST", "/api/complete", json.dumps(request), {"Content-Type": "application/json"}
  )


def png_bytes(pixels: np.ndarray) -> bytes:
  out = io.BytesIO()
  Image.fromarray(pixels).save(out, format="PNG")
  return out.getvalue()


def data_url(pixels: np.ndarray) -> str:
  return "data:image/png;base64," + base64.b64encode(png_bytes(pixels)).decode("ascii")


def pixels_of(url: str) -> np.ndarray:
  payload = url.split(",", 1)[1]
  return np.asarray(Image.open(io.BytesIO(base64.b64decode(payload))).convert("RGB"))


def photo(seed: int = 0) -> np.ndarray:
  """A 64x64 picture with a saturated checkerboard in the middle (no model draws it)."""
  rng = np.random.default_rng(seed)
  pixels = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
  checks = (np.indices((64, 64)).sum(0) // 4) % 2
  pixels[16:48, 16:48] = np.where(checks[16:48, 16:48, None], [255, 0, 255], [0, 255, 0])
  return pixels


def png_header_only(width: int, height: int) -> bytes:
  """A PNG that claims width x height pixels and holds almost none (a decompression bomb's
  header: decoding it would allocate width * height * 3 bytes)."""

  def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

  ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
  return (
    b"\x89PNG\r\n\x1a\n"
    + chunk(b"IHDR", ihdr)
    + chunk(b"IDAT", zlib.compress(b"\0" * 64))
    + chunk(b"IEND", b"")
  )


def outside(box):
  x, y, w, h = box
  keep = np.ones((64, 64), bool)
  keep[y : y + h, x : x + w] = False
  return keep


# --- Completions -----------------------------------------------------------------------------


def test_a_completion_keeps_the_border_and_equals_the_runs_own_samples(server, demo):
  pixels, box = photo(), [8, 20, 24, 30]
  request = {"image": data_url(pixels), "caption": "a small red star", "k": 3, "seed": 7}
  status, out = complete(server, dict(request, box=box, second_caption="a large blue circle"))
  assert status == 200, out
  assert out["k"] == 3 and out["box"] == box and np.array_equal(pixels_of(out["input"]), pixels)
  got = np.stack([pixels_of(url) for url in out["first"]["samples"]])
  assert got.shape == (3, 64, 64, 3)
  keep = outside(box)
  assert (got[:, keep] == pixels[keep]).all()  # The border is the input, exactly.
  assert np.abs(got[:, ~keep].astype(int) - pixels[~keep]).mean() > 10  # The hole is not.

  # The same request through the run directly (the code `inpaint` uses) gives the same PNGs.
  hole = masks.make(masks.parse("box:8,20,24,30"))
  batch = demo.run.batch_from_image(pixels, hole, ["a small red star"])
  expected = images.to_uint8(demo.run.sample(batch, 3, 7)[:, 0])
  assert np.array_equal(got, expected)

  # "Switch caption": the same border and seed under the second caption.
  second = out["second"]
  assert second["caption"] == "a large blue circle" and len(second["samples"]) == 3
  batch2 = demo.run.batch_from_image(pixels, hole, ["a large blue circle"])
  expected2 = images.to_uint8(demo.run.sample(batch2, 3, 7)[:, 0])
  assert np.array_equal(np.stack([pixels_of(u) for u in second["samples"]]), expected2)
  for timed in (out["first"], second):
    assert timed["sample_ms"] > 0 and timed["per_sample_ms"] == pytest.approx(
      timed["sample_ms"] / 3, abs=0.1
    )
  grid = pixels_of(out["first"]["grid"])  # The download: Run.visualize's row.
  assert np.array_equal(grid, demo.run.visualize(batch, demo.run.sample(batch, 3, 7)))


def test_the_interpolation_starts_and_ends_at_the_two_samples(server, demo):
  assert demo.has_latent  # vaegan has a latent z (Family.interpolate).
  request = {"image": data_url(photo(1)), "caption": "a red square", "k": 4, "seed": 3}
  status, out = complete(server, request)
  assert status == 200, out
  samples = [pixels_of(url) for url in out["first"]["samples"]]
  status, inter = call(server, "POST", "/api/interpolate", json.dumps(dict(request, a=1, b=3)), {})
  assert status == 200, inter
  frames = [pixels_of(url) for url in inter["frames"]]
  assert len(frames) == serve.INTERPOLATION_FRAMES and inter["t"][0] == 0 and inter["t"][-1] == 1
  # Same z; the generator runs on 9 instead of 4 images, so allow one level of rounding.
  assert np.abs(frames[0].astype(int) - samples[1]).max() <= 1
  assert np.abs(frames[-1].astype(int) - samples[3]).max() <= 1
  status, bad = call(server, "POST", "/api/interpolate", json.dumps(dict(request, a=0, b=4)), {})
  assert status == 400 and "sample b must be an integer from 0 to 3" in bad["error"]


def test_validation_examples_and_uploads_come_back_as_64x64_pngs(server):
  status, page = call(server, "GET", "/api/examples?offset=2&limit=3")
  assert status == 200 and page["total"] == 8 and [e["index"] for e in page["items"]] == [2, 3, 4]
  assert all(pixels_of(e["image"]).shape == (64, 64, 3) and e["captions"] for e in page["items"])

  big = np.zeros((300, 500, 3), np.uint8)
  big[:, 100:400] = 255  # The centre square is white, the cropped sides black.
  status, out = call(server, "POST", "/api/upload", png_bytes(big))
  assert status == 200 and (out["width"], out["height"]) == (500, 300)
  small = pixels_of(out["image"])
  assert small.shape == (64, 64, 3) and np.array_equal(small, images.load(png_bytes(big)))


# --- Bad input -------------------------------------------------------------------------------


def _truncated_png() -> bytes:
  data = png_bytes(photo())
  return data[: len(data) // 2]


BAD_UPLOADS = {
  "text file": (b"just some words, not a picture\n", 400, "not an image"),
  "empty file": (b"", 400, "the upload is empty"),
  "truncated PNG": (_truncated_png(), 400, "damaged or truncated"),
  "too many pixels": (png_header_only(8000, 8000), 413, "too many pixels"),
  "beyond PIL's own bomb limit": (png_header_only(30000, 30000), 413, "too many pixels"),
}


@pytest.mark.parametrize("name", list(BAD_UPLOADS))
def test_a_bad_upload_is_one_clear_line_and_the_server_stays_up(server, name):
  body, status, message = BAD_UPLOADS[name]
  got, out = call(server, "POST", "/api/upload", body)
  assert got == status and message in out["error"] and "\n" not in out["error"], out
  assert "BytesIO" not in out["error"]
  assert call(server, "GET", "/api/info")[0] == 200


def test_an_upload_over_the_size_limit_is_refused_unread(server):
  connection = http.client.HTTPConnection(*server, timeout=30)
  connection.putrequest("POST", "/api/upload")
  connection.putheader("Content-Length", str(serve.MAX_UPLOAD_BYTES + 1))
  connection.endheaders(b"\x89PNG")  # The rest never comes: the answer must not wait for it.
  response = connection.getresponse()
  out = json.loads(response.read())
  connection.close()
  assert response.status == 413 and "the upload is too large" in out["error"]
  assert "limit is 10 MB" in out["error"]


BAD_REQUESTS = {
  "empty caption": ({"caption": "   "}, "conditioned on captions: type a caption"),
  "box outside the image": ({"box": [40, 40, 32, 32]}, "lies outside the 64x64 image"),
  "negative corner": ({"box": [-1, 0, 8, 8]}, "lies outside the 64x64 image"),
  "zero-area box": ({"box": [10, 10, 0, 5]}, "the hole has zero area"),
  "box not numbers": ({"box": ["a", 1, 2, 3]}, "four whole numbers"),
  "K = 0": ({"k": 0}, "K (the number of completions) must be an integer from 1 to 16"),
  "K = 17": ({"k": 17}, "from 1 to 16 (got 17)"),
  "K not a number": ({"k": "four"}, "from 1 to 16 (got 'four')"),
  "negative seed": ({"seed": -3}, "the seed must be an integer"),
  "no image": ({"image": None}, "no image: pick an example or upload a photo"),
  "image not a data URL": ({"image": "http://example.com/a.png"}, "base64 data: URL"),
  "image not base64": ({"image": "data:image/png;base64,%%%"}, "not valid base64"),
  "image not an image": (
    {"image": "data:image/png;base64," + base64.b64encode(b"hello").decode()},
    "not an image",
  ),
  "caption too long": ({"caption": "x" * 501}, "the caption is too long"),
  "dialogue not a list": ({"dialogue": "a star"}, "dialogue must be a list"),
  "dialogue to a caption model": (
    {"dialogue": [{"question": "what is it?", "answer": "a star"}]},
    "this model reads one caption, not a conversation",
  ),
}


@pytest.mark.parametrize("name", list(BAD_REQUESTS))
def test_a_bad_request_is_one_clear_line_and_a_good_one_still_works(server, name):
  change, message = BAD_REQUESTS[name]
  request = {"image": data_url(photo()), "caption": "a red star", "k": 2, "seed": 0, **change}
  status, out = complete(server, request)
  assert status == 400 and message in out["error"] and "\n" not in out["error"], out
  status, good = complete(server, {"image": data_url(photo()), "caption": "a red star", "k": 2})
  assert status == 200 and len(good["first"]["samples"]) == 2


def test_malformed_http_is_answered_not_crashed(server):
  status, out = call(server, "POST", "/api/complete", b"{not json", {})
  assert status == 400 and "not valid JSON" in out["error"]
  status, out = call(server, "POST", "/api/complete", b"[1, 2]", {})
  assert status == 400 and "JSON object" in out["error"]
  assert call(server, "POST", "/api/nothing", b"{}", {})[0] == 404
  assert call(server, "GET", "/api/examples?offset=x")[0] == 400
  assert call(server, "GET", "/static/../serve.py")[0] == 404
  assert call(server, "GET", "/static/%2e%2e/serve.py")[0] == 404
  assert call(server, "GET", "/api/info")[0] == 200


# --- Concurrency, disk, isolation ------------------------------------------------------------


def test_two_requests_at_the_same_time_both_get_correct_answers(server):
  requests = [
    {"image": data_url(photo(2)), "caption": "a large green heart", "k": 4, "seed": 11},
    {
      "image": data_url(photo(3)),
      "caption": "a small yellow star",
      "k": 4,
      "seed": 12,
      "box": [0, 0, 20, 64],
    },
  ]
  alone = [complete(server, r)[1]["first"]["samples"] for r in requests]
  for _ in range(3):
    start = threading.Barrier(len(requests))
    together: list = [None] * len(requests)

    def one(i, start=start, together=together):
      start.wait()
      together[i] = complete(server, requests[i])

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(requests))]
    for thread in threads:
      thread.start()
    for thread in threads:
      thread.join()
    for (status, out), expected in zip(together, alone):
      assert status == 200 and out["first"]["samples"] == expected


def test_the_demo_writes_nothing(server, demo_workdir, tmp_path, monkeypatch):
  def tree(root):
    return {
      os.path.join(folder, name): os.stat(os.path.join(folder, name)).st_mtime_ns
      for folder, _, names in os.walk(root)
      for name in names
    }

  monkeypatch.chdir(tmp_path)
  before = tree(demo_workdir)
  call(server, "POST", "/api/upload", png_bytes(photo()))
  call(server, "POST", "/api/upload", b"not an image")
  complete(server, {"image": data_url(photo()), "caption": "a red star", "k": 2})
  assert tree(demo_workdir) == before and os.listdir(tmp_path) == []


def test_the_page_is_only_shipped_files_with_nothing_from_another_host(server):
  status, page = call(server, "GET", "/")
  assert status == 200 and b'<script src="/static/app.js">' in page
  for name in ("index.html", "app.js", "style.css"):
    with open(os.path.join(serve.STATIC_DIR, name), encoding="utf-8") as f:
      text = f.read()
    assert "http://" not in text and "https://" not in text and "//cdn" not in text, name
  assert call(server, "GET", "/static/app.js")[0] == 200
  assert call(server, "GET", "/static/nothing.js")[0] == 404


def test_the_server_binds_localhost_unless_told(demo):
  httpd = serve.make_server(demo)
  try:
    assert httpd.server_address[0] == "127.0.0.1"
  finally:
    httpd.server_close()


def test_the_demo_imports_no_trainer_and_names_no_family(demo_workdir, repo_root):
  with open(serve.__file__, encoding="utf-8") as f:
    tree = ast.parse(f.read())
  imported = {
    alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names
  }
  imported |= {
    f"{node.module}.{alias.name}"
    for node in ast.walk(tree)
    if isinstance(node, ast.ImportFrom)
    for alias in node.names
  }
  bad = [
    m for m in imported if m.split(".")[0] in ("grain", "data_prep") or "train" in m.split(".")
  ]
  assert bad == []
  strings = {node.value for node in ast.walk(tree) if isinstance(node, ast.Constant)}
  assert not strings & {"vaegan", "l2", "pix2pix"}  # No branch on a family's name.
  code = (
    "import sys; from inpainting import serve, inference; "
    f"serve.Demo(inference.load_run({demo_workdir!r})); "
    "bad = [m for m in sys.modules if m.split('.')[0] in ('grain', 'data_prep') "
    "or m in ('inpainting.train', 'inpainting.input_pipeline')]; print('BAD', bad)"
  )
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=1")
  out = subprocess.run(
    [sys.executable, "-c", code], cwd=repo_root, env=env, capture_output=True, text=True
  )
  assert out.returncode == 0, out.stderr
  assert "BAD []" in out.stdout, out.stdout


def test_a_missing_run_is_one_line_and_exit_status_2(tmp_path, repo_root):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  out = subprocess.run(
    [sys.executable, "-m", "inpainting.serve", f"--workdir={tmp_path}", "--port=0"],
    cwd=repo_root,
    env=env,
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert out.returncode == 2, out.stderr
  assert out.stderr.strip() == f"error: {tmp_path} holds no trained run (no config.json)"


# --- A run that reads a conversation --------------------------------------------------------


def test_a_conversation_run_completes_turn_by_turn_like_inpaint(tmp_path_factory):
  from inpainting import images, inpaint  # noqa: PLC0415

  workdir = painter_workdir(tmp_path_factory)
  demo = serve.Demo(inference.load_run(workdir), max_examples=4)
  assert demo.info()["reads_conversation"] and demo.info()["max_turns"] == serve.MAX_TURNS
  pixels, box = photo(3), [16, 16, 32, 32]
  said = [("what is in the middle?", "a star"), ("which colour is it?", "it is red")]
  context = "a grey background with a small blue circle at the top left"
  request = {"image": data_url(pixels), "box": box, "caption": context, "k": 2, "seed": 4}
  results = []
  for turn in range(len(said) + 1):
    dialogue = [{"question": q, "answer": a} for q, a in said[:turn]]
    out = demo.complete({**request, "dialogue": dialogue})["first"]
    assert out["turn"] == turn
    assert out["caption"] == " ".join([context, *(f"{q} {a}" for q, a in said[:turn])])
    results.append(np.stack([pixels_of(url) for url in out["samples"]]))
    assert (results[-1][:, outside(box)] == pixels[outside(box)]).all()
  # The same rows as `inpaint --dialogue` (same run, seed and turns).
  path = tmp_path_factory.mktemp("painter_photo") / "photo.png"
  path.write_bytes(png_bytes(pixels))
  _, texts, _, samples = inpaint.inpaint_dialogue(
    workdir,
    str(path),
    context,
    [{"question": q, "answer": a} for q, a in said],
    num_samples=2,
    seed=4,
  )
  assert texts[2] == out["caption"]
  for turn, got in enumerate(results):
    np.testing.assert_array_equal(got, images.to_uint8(samples[turn][:, 0]))
  bad = {**request, "dialogue": [{"question": "what is it?", "answer": " "}]}
  with pytest.raises(serve.RequestError, match="turn 1 needs a question and an answer"):
    demo.complete(bad)

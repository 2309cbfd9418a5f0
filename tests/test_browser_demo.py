"""The web demo in a real browser: `python -m inpainting.serve` on a free port with a smoke
checkpoint, driven through headless Chromium by Selenium (`pytest -k browser`).

Needs Debian's `chromium` and `chromium-driver` and the `selenium` package (the `test`
extra); `.ci/run` installs them. Where they are missing the tests skip, except under CI
(CI=true), where they fail: a browser that cannot be installed is a CI failure.

The screenshot of the page with its completed examples is saved as
$INPAINTING_TEST_ARTIFACTS/demo.png (default: <temp dir>/inpainting-test-artifacts/).
"""

from __future__ import annotations

import os
import queue
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np
import pytest

from tests.conftest import REPO_ROOT
from tests.test_serve import outside, painter_workdir, photo, pixels_of, png_bytes, smoke_workdir

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
ARTIFACTS = os.environ.get(
  "INPAINTING_TEST_ARTIFACTS", os.path.join(tempfile.gettempdir(), "inpainting-test-artifacts")
)
TIMEOUT = 180  # Seconds for the server to start or a completion to arrive (2 shared cores).


def _missing(what: str):
  message = f"the browser test needs {what} (apt-get install chromium chromium-driver; pip install selenium)"
  if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
    pytest.fail(f"CI: {message}")
  pytest.skip(message)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
  try:
    from selenium import webdriver  # noqa: PLC0415
    from selenium.webdriver.chrome.service import Service  # noqa: PLC0415
  except ImportError:
    _missing("selenium")
  binary = next((shutil.which(name) for name in CHROMIUM_NAMES if shutil.which(name)), None)
  driver_path = shutil.which("chromedriver")
  if binary is None:
    _missing("Chromium")
  if driver_path is None:
    _missing("chromedriver")
  os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must not try to download anything.
  options = webdriver.ChromeOptions()
  options.binary_location = binary
  for argument in (
    "--headless=new",
    "--no-sandbox",  # CI runs as root in a container.
    "--disable-dev-shm-usage",
    "--disable-gpu",
    "--window-size=1500,1250",
    "--force-device-scale-factor=1",
  ):
    options.add_argument(argument)
  scratch = tmp_path_factory.mktemp("chromium")  # Chromium's profile and temp files.
  options.add_argument(f"--user-data-dir={scratch / 'profile'}")
  service = Service(driver_path, env=dict(os.environ, TMPDIR=str(scratch)))
  driver = webdriver.Chrome(service=service, options=options)
  driver.set_page_load_timeout(60)
  yield driver
  driver.quit()


def _serve(workdir: str):
  """`python -m inpainting.serve` of `workdir` on a free port; yields its URL."""
  env = dict(
    os.environ,
    JAX_PLATFORMS="cpu",
    XLA_FLAGS="--xla_force_host_platform_device_count=1",
    PYTHONUNBUFFERED="1",
  )
  process = subprocess.Popen(
    [sys.executable, "-m", "inpainting.serve", f"--workdir={workdir}", "--port=0"],
    cwd=REPO_ROOT,
    env=env,
    stdout=subprocess.PIPE,
    stderr=subprocess.STDOUT,
    text=True,
  )
  lines: queue.Queue = queue.Queue()
  log: list[str] = []

  def read():
    for line in process.stdout:
      log.append(line)
      lines.put(line)

  threading.Thread(target=read, daemon=True).start()
  url, deadline = None, time.time() + TIMEOUT
  while url is None and time.time() < deadline and process.poll() is None:
    try:
      found = re.search(r"at (http://\S+)", lines.get(timeout=1))
    except queue.Empty:
      continue
    url = found.group(1) if found else None
  if url is None:
    process.kill()
    pytest.fail("the demo server did not print its URL:\n" + "".join(log))
  assert url.startswith("http://127.0.0.1:"), url  # Local only unless --host says otherwise.
  yield url
  process.terminate()
  process.wait(timeout=30)
  assert process.returncode in (0, -15), "".join(log)
  assert "Traceback" not in "".join(log), "".join(log)


@pytest.fixture(scope="module")
def demo_url(tmp_path_factory):
  """The demo of the vaegan smoke run (captions, a latent)."""
  yield from _serve(smoke_workdir(tmp_path_factory))


@pytest.fixture(scope="module")
def painter_demo_url(tmp_path_factory):
  """The demo of the multi-turn painter smoke run (a conversation, no latent)."""
  yield from _serve(painter_workdir(tmp_path_factory))


def _wait(driver, condition, what: str, timeout: float = TIMEOUT):
  from selenium.webdriver.support.ui import WebDriverWait  # noqa: PLC0415

  try:
    return WebDriverWait(driver, timeout, poll_frequency=0.2).until(lambda d: condition(d))
  except Exception:
    error = driver.find_element("id", "error")
    raise AssertionError(f"timed out waiting for {what}; error box: {error.text!r}") from None


def _results(driver):
  return driver.find_elements("css selector", "#results .result")


def _submit_and_check(driver, count_before: int, k: int):
  """Clicks Complete, waits for the new result row; checks the K samples against the
  input: equal outside the hole, different inside. Returns the row."""
  driver.find_element("id", "complete").click()
  _wait(driver, lambda d: len(_results(d)) == count_before + 1, "the completions")
  row = _results(driver)[0]  # Newest first.
  samples = row.find_elements("css selector", ".caption-row img.sample")
  assert len(samples) == k
  given = pixels_of(driver.find_element("id", "input64").get_attribute("src"))
  box = [int(driver.find_element("id", f"box-{n}").get_attribute("value")) for n in "xywh"]
  keep = outside(box)
  for img in samples:
    got = pixels_of(img.get_attribute("src"))
    assert got.shape == (64, 64, 3)
    assert (got[keep] == given[keep]).all()  # The border is the input, exactly.
    assert np.abs(got[~keep].astype(int) - given[~keep]).mean() > 10  # The hole is new.
  assert "completions in" in row.text and "ms each" in row.text  # Each completion's time.
  assert (
    row.find_element("css selector", "a.download")
    .get_attribute("href")
    .startswith("data:image/png;base64,")
  )
  return row


def test_browser_upload_caption_complete_error_and_recover(browser, demo_url, tmp_path):
  from selenium.webdriver.common.action_chains import ActionChains  # noqa: PLC0415

  driver = browser
  driver.get(demo_url)
  _wait(driver, lambda d: "ready" in d.find_element("id", "status").text, "the warm-up")
  # The validation examples of the run's data are offered (and the first is preselected).
  _wait(driver, lambda d: len(d.find_elements("css selector", "#examples img")) > 0, "examples")

  # Upload a photo (not 64x64: it is centre-cropped and resized, and shown).
  driver.find_element("id", "tab-upload").click()
  big = np.repeat(np.repeat(photo(5), 3, axis=0), 4, axis=1)[:, 32:-32]  # 192 x 192.
  path = tmp_path / "photo.png"
  path.write_bytes(png_bytes(big))
  driver.find_element("id", "upload").send_keys(str(path))
  _wait(driver, lambda d: "resized to 64×64" in d.find_element("id", "upload-note").text, "upload")

  caption = driver.find_element("id", "caption")
  caption.clear()
  caption.send_keys("a large red star in the middle")
  k = driver.find_element("id", "k")
  k.clear()
  k.send_keys("4")
  _submit_and_check(driver, 0, 4)

  # A text file: a clear message on the page, and the server stays up.
  notes = tmp_path / "notes.txt"
  notes.write_text("these are words, not pixels\n")
  driver.find_element("id", "upload").send_keys(str(notes))
  _wait(
    driver,
    lambda d: (
      d.find_element("id", "error").is_displayed()
      and "not an image" in d.find_element("id", "error").text
    ),
    "the error message",
    timeout=30,
  )
  assert "notes.txt" in driver.find_element("id", "error").text

  # Then a valid request still works: a hole drawn by dragging on the magnified image.
  canvas = driver.find_element("id", "canvas")
  scale = canvas.size["width"] / 64

  def offset(px, py):  # Selenium offsets are from the element's centre.
    return round((px - 32) * scale), round((py - 32) * scale)

  actions = ActionChains(driver)
  actions.move_to_element_with_offset(canvas, *offset(4.5, 6.5)).click_and_hold()
  actions.move_to_element_with_offset(canvas, *offset(20, 20)).move_to_element_with_offset(
    canvas, *offset(30.5, 40.5)
  )
  actions.release().perform()
  box = [int(driver.find_element("id", f"box-{n}").get_attribute("value")) for n in "xywh"]
  assert box[:2] == [4, 6] and 24 <= box[2] <= 28 and 32 <= box[3] <= 36, box
  row = _submit_and_check(driver, 1, 4)
  assert not driver.find_element("id", "error").is_displayed()

  # A latent model offers the interpolation slider between two samples.
  row.find_element("css selector", ".interp button").click()
  _wait(
    driver,
    lambda d: (
      row.find_element("css selector", ".interp img").get_attribute("src")
      and row.find_element("css selector", ".interp input[type=range]").is_displayed()
    ),
    "the interpolation",
  )

  os.makedirs(ARTIFACTS, exist_ok=True)
  shot = os.path.join(ARTIFACTS, "demo.png")
  driver.save_screenshot(shot)
  print(f"screenshot: {shot}")
  assert os.path.getsize(shot) > 10_000


def test_browser_multi_turn_dialogue(browser, painter_demo_url):
  """Turns added one at a time: one completion row per turn, each with the context and the
  turns so far, the border kept exactly; a turn without an answer is one line on the page."""
  driver = browser
  driver.get(painter_demo_url)
  _wait(driver, lambda d: "ready" in d.find_element("id", "status").text, "the warm-up")
  _wait(driver, lambda d: len(d.find_elements("css selector", "#examples img")) > 0, "examples")
  assert driver.find_element("id", "dialogue").is_displayed()
  caption = driver.find_element("id", "caption")
  caption.clear()
  caption.send_keys("a grey background with a small blue circle at the top left")
  k = driver.find_element("id", "k")
  k.clear()
  k.send_keys("2")
  # Turn 0: the context alone.
  _submit_and_check(driver, 0, 2)
  said = [("what is in the middle?", "a star"), ("which colour is it?", "it is red")]
  for turn, (question, answer) in enumerate(said, 1):
    driver.find_element("id", "question").send_keys(question)
    driver.find_element("id", "answer").send_keys(answer)
    driver.find_element("id", "add-turn").click()
    _wait(driver, lambda d, n=turn: len(_results(d)) == n + 1, f"the completion of turn {turn}")
    row = _results(driver)[0]
    head = row.find_element("css selector", ".caption").text
    assert head.startswith(f"turn {turn}:") and answer in head and said[0][1] in head, head
    given = pixels_of(driver.find_element("id", "input64").get_attribute("src"))
    keep = outside([16, 16, 32, 32])
    samples = row.find_elements("css selector", ".caption-row img.sample")
    assert len(samples) == 2
    for img in samples:
      assert (pixels_of(img.get_attribute("src"))[keep] == given[keep]).all()
  assert len(driver.find_elements("css selector", "#turns li")) == 2

  # A turn without an answer: a clear message, no new row, the turns told are kept.
  driver.find_element("id", "question").send_keys("is it big?")
  driver.find_element("id", "add-turn").click()
  _wait(
    driver,
    lambda d: "needs a question and an answer" in d.find_element("id", "error").text,
    "the error message",
    timeout=30,
  )
  assert len(_results(driver)) == 3 and len(driver.find_elements("css selector", "#turns li")) == 2
  os.makedirs(ARTIFACTS, exist_ok=True)
  driver.save_screenshot(os.path.join(ARTIFACTS, "demo_dialogue.png"))

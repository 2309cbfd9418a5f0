"""The converter shared by every source: decode, validate, skip, write, report progress.

A source (a module in `data_prep/sources/`) only lists candidate items per split: an id,
its captions and an image path (or, for synthetic scenes, a scene index; or, for drawings,
a function that renders the pixels), and a dialogue where the source has one (VisDial;
synthetic scenes get theirs, and a context caption, from the generator). Everything that
can go wrong with an item is handled here the same way for all sources: the item is
skipped, counted by reason in metadata.json and listed in skipped.txt, and the run goes on.

The dataset is written into a temporary folder next to the output folder and renamed into
place only once complete, so an output folder either does not exist or is whole.
"""

from __future__ import annotations

import dataclasses
import datetime
import importlib
import json
import math
import multiprocessing
import os
import secrets
import shutil
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple

import numpy as np
import PIL
from array_record.python.array_record_module import ArrayRecordWriter
from PIL import ImageFile

from data_prep import tfds_export
from inpainting import images, records, scenes, tokenizer
from inpainting.errors import UserError

SOURCES = ("ift6266", "coco", "flickr", "synthetic", "quickdraw", "sketchrnn", "visdial")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
RECORDS_PER_SHARD = 10_000  # Shard size when --num_shards is 0 (about 120 MB of pixels).
MIN_POOL_ITEMS = 2_000  # Fewer items than this are converted in-process (no pool start-up).
CHUNK_SIZE = 256  # Items per worker task.
WRITER_OPTIONS = "group_size:1,uncompressed,max_parallelism:1"
RESIZE_NOTE = images.RESIZE_NOTE

# Skip reasons, in the order metadata.json lists them.
GRAYSCALE = images.GRAYSCALE
CORRUPT_IMAGE = images.CORRUPT_IMAGE
MISSING_IMAGE = "missing_image"
NO_CAPTIONS = "no_captions"
INVALID_UTF8 = "invalid_utf8"
EMPTY_CAPTION = "empty_caption"
DUPLICATE_ID = "duplicate_id"
MALFORMED_ROW = "malformed_row"
EMPTY_DRAWING = "empty_drawing"
OUT_OF_RANGE = "out_of_range"
REASONS = (
  GRAYSCALE,
  CORRUPT_IMAGE,
  MISSING_IMAGE,
  NO_CAPTIONS,
  INVALID_UTF8,
  EMPTY_CAPTION,
  DUPLICATE_ID,
  MALFORMED_ROW,
  images.TOO_LARGE,
  EMPTY_DRAWING,
  OUT_OF_RANGE,
)


class PrepareError(UserError):
  """Bad input or options: the CLI prints the one-line message and exits with code 2."""

  def __init__(self, message: str):
    super().__init__(" ".join(str(message).split()))


@dataclasses.dataclass
class Options:
  """Converter options (the CLI flags), validated by `validate`."""

  vocab_size: int = 512  # SentencePiece vocabulary, trained on the train split's text.
  grayscale: str = "skip"  # skip | convert (to RGB).
  num_shards: int = 0  # Shards per split; 0 = one per RECORDS_PER_SHARD items.
  seed: int = 0  # Split hashing (flickr) and the scene stream (synthetic).
  num_train: int = 20_000  # Synthetic only.
  num_validation: int = 2_000  # Synthetic only.
  workers: int = 0  # Decoding processes; 0 = the CPU count for large inputs, else 1.
  overwrite: bool = False  # Replace an existing output folder (once the new one is whole).
  progress: bool = True  # The progress line on stderr.
  classes: str = ""  # Drawings only: comma-separated class words to keep; "" = all.
  line_width: float = 1.5  # Drawings only: stroke width in output pixels.
  augment: int = 0  # Drawings only: extra stroke-augmented copies of each train drawing.

  def validate(self) -> None:
    if self.grayscale not in ("skip", "convert"):
      raise PrepareError(f"--grayscale must be skip or convert, got {self.grayscale!r}")
    for name in ("vocab_size", "num_train", "num_validation"):
      if getattr(self, name) < 1:
        raise PrepareError(f"--{name} must be positive, got {getattr(self, name)}")
    if not 0 < self.line_width <= 16:
      raise PrepareError(f"--line_width must be in (0, 16], got {self.line_width}")
    for name in ("num_shards", "workers", "augment"):
      if getattr(self, name) < 0:
        raise PrepareError(f"--{name} must be >= 0, got {getattr(self, name)}")


class Item(NamedTuple):
  """One candidate record, as listed by a source."""

  id: str
  captions: tuple[str, ...] = ()
  path: str = ""  # Image file to decode ...
  index: int = -1  # ... or the synthetic scene index (captions come from the generator) ...
  # ... or a picklable function () -> uint8 [64, 64, 3] (a functools.partial of a module-level
  # function, as it runs in worker processes); it may raise images.ImageError to skip.
  render: Callable[[], np.ndarray] | None = None
  label: str | None = None  # The record's class word (records.Example.label), if any.
  # Turns {"question", "answer", "reveals"} (records.Example.dialogue); synthetic scenes'
  # come from the generator.
  dialogue: tuple[dict[str, str], ...] = ()


class Skips:
  """Skipped inputs, in the order met: (reason, what) pairs."""

  def __init__(self):
    self.entries: list[tuple[str, str]] = []

  def add(self, reason: str, what: str) -> None:
    assert reason in REASONS, reason
    what = " ".join(what.split()).encode("utf-8", "backslashreplace").decode("utf-8")
    self.entries.append((reason, what))

  def counts(self) -> dict[str, int]:
    counter = Counter(reason for reason, _ in self.entries)
    return {reason: counter[reason] for reason in REASONS}

  def summary(self) -> str:
    parts = [f"{n} {reason}" for reason, n in self.counts().items() if n]
    return ", ".join(parts) or "none"


# --- helpers for sources ---------------------------------------------------------------------


def require_dir(path: str) -> str:
  if not os.path.isdir(path):
    raise PrepareError(f"folder not found: {path}")
  return path


def require_file(path: str) -> str:
  if not os.path.isfile(path):
    raise PrepareError(f"file not found: {path}")
  return path


def is_utf8(text: str) -> bool:
  """False for text holding undecodable bytes (lone surrogates), e.g. odd file names."""
  try:
    text.encode("utf-8")
  except UnicodeEncodeError:
    return False
  return True


def list_images(folder: str) -> list[tuple[str, str]]:
  """(id = file stem, path) of the image files in `folder`, sorted by file name."""
  names = sorted(
    entry.name
    for entry in os.scandir(require_dir(folder))
    if entry.is_file() and os.path.splitext(entry.name)[1].lower() in IMAGE_EXTENSIONS
  )
  return [(os.path.splitext(name)[0], os.path.join(folder, name)) for name in names]


class Captions:
  """Captions per image id, each decoded strictly; a bad one is skipped, not fatal."""

  def __init__(self, skips: Skips):
    self.by_id: dict[str, list[str]] = {}
    self._skips = skips

  def add(self, image_id: str, caption: bytes | str, where: str) -> None:
    """Adds one caption.

    Args:
      image_id: the image it describes.
      caption: raw bytes (decoded as UTF-8, strictly) or text (checked to be valid UTF-8:
        no lone surrogates).
      where: names the caption in skipped.txt, e.g. "captions.txt row 12".
    """
    text = caption.decode("utf-8", "surrogateescape") if isinstance(caption, bytes) else caption
    if not (is_utf8(text) and is_utf8(image_id)):
      self._skips.add(INVALID_UTF8, f"{where} ({image_id})")
      return
    text = " ".join(text.split())
    if not text:
      self._skips.add(EMPTY_CAPTION, f"{where} ({image_id})")
      return
    self.by_id.setdefault(image_id, []).append(text)


def assemble(
  images: dict[str, Sequence[tuple[str, str]]], captions: Captions, skips: Skips
) -> dict[str, list[Item]]:
  """Joins image files with their captions.

  Args:
    images: per split, (id, path) pairs in a deterministic order.
    captions: captions by image id.
    skips: receives duplicate ids (all but the first), missing files, images without
      captions and captions whose image does not exist.

  Returns:
    Items per split.
  """
  seen: set[str] = set()
  items: dict[str, list[Item]] = {}
  for split in records.SPLITS:
    items[split] = []
    for image_id, path in images.get(split, ()):
      if not is_utf8(image_id):
        skips.add(INVALID_UTF8, path)
        continue
      if image_id in seen:
        skips.add(DUPLICATE_ID, path)
        continue
      seen.add(image_id)
      if not os.path.isfile(path):
        skips.add(MISSING_IMAGE, path)
      elif not captions.by_id.get(image_id):
        skips.add(NO_CAPTIONS, path)
      else:
        items[split].append(Item(image_id, tuple(captions.by_id[image_id]), path=path))
  for image_id, texts in captions.by_id.items():
    if image_id not in seen:
      skips.add(MISSING_IMAGE, f"{image_id} ({len(texts)} caption(s), no image file)")
  return items


# --- decoding (runs in worker processes) ------------------------------------------------------


def load_image(path: str, grayscale: str = "skip") -> np.ndarray:
  """`images.load`, kept under the converter's name (skips raise images.ImageError)."""
  return images.load(path, grayscale)


class _Outcome(NamedTuple):
  record: bytes | None  # None when skipped.
  captions: tuple[str, ...]
  skip_reason: str = ""
  skip_detail: str = ""
  other_text: tuple[str, ...] = ()  # The context caption and dialogue: tokenizer text too.


def _convert(item: Item, seed: int, grayscale: str) -> _Outcome:
  if item.render is not None:
    try:
      image = item.render()
    except images.ImageError as skipped:
      return _Outcome(None, (), skipped.reason, str(skipped))
    example = records.Example(
      item.id, image, list(item.captions), label=item.label, dialogue=list(item.dialogue)
    )
  elif item.path:
    try:
      image = load_image(item.path, grayscale)
    except images.ImageError as skipped:
      return _Outcome(None, (), skipped.reason, str(skipped))
    example = records.Example(
      id=item.id, image=image, captions=list(item.captions), dialogue=list(item.dialogue)
    )
  else:
    image, scene, captions = scenes.generate(seed, item.index)
    context_caption, dialogue = scenes.conversation(seed, item.index, scene)
    example = records.Example(
      id=item.id,
      image=image,
      captions=captions,
      scene=scene,
      context_caption=context_caption,
      dialogue=dialogue,
    )
  other_text = [example.context_caption]
  for turn in example.dialogue:
    other_text += [turn["question"], turn["answer"]]
  return _Outcome(
    records.encode(example),
    tuple(example.captions),
    other_text=tuple(text for text in other_text if text.strip()),
  )


def _convert_chunk(task: tuple[list[Item], int, str]) -> list[_Outcome]:
  items, seed, grayscale = task
  ImageFile.LOAD_TRUNCATED_IMAGES = False  # Truncated files must fail, not decode as grey.
  return [_convert(item, seed, grayscale) for item in items]


def _pool_context() -> multiprocessing.context.BaseContext:
  """fork starts fastest, but forking a process that already runs JAX's threads can
  deadlock (the trainer calls `prepare` in-process), so then use forkserver, with this
  module preloaded so that each worker starts without importing it again."""
  if "jax" not in sys.modules:
    return multiprocessing.get_context("fork")
  context = multiprocessing.get_context("forkserver")
  context.set_forkserver_preload([__name__])
  return context


def _outcomes(items: list[Item], options: Options) -> Iterator[_Outcome]:
  """Converts items in order, with a process pool when there are many."""
  workers = options.workers or (len(os.sched_getaffinity(0)) if len(items) >= MIN_POOL_ITEMS else 1)
  chunk_size = max(1, min(CHUNK_SIZE, math.ceil(len(items) / (4 * workers))))
  tasks = (
    (items[start : start + chunk_size], options.seed, options.grayscale)
    for start in range(0, len(items), chunk_size)
  )
  if workers <= 1:
    for task in tasks:
      yield from _convert_chunk(task)
    return
  with _pool_context().Pool(workers) as pool:
    for outcomes in pool.imap(_convert_chunk, tasks):
      yield from outcomes


# --- progress and writing -------------------------------------------------------------------------


class ConversionProgress:
  """done/total, images/s and ETA on stderr: in place on a terminal, else every 10 s."""

  def __init__(self, label: str, total: int, enabled: bool = True):
    self._label, self._total, self._enabled = label, total, enabled
    self._tty = sys.stderr.isatty()
    self._start = self._last = time.monotonic()
    self.done = 0

  def update(self, count: int = 1) -> None:
    self.done += count
    now = time.monotonic()
    if self._enabled and now - self._last >= (0.25 if self._tty else 10.0):
      self._last = now
      self._print(final=False)

  def rate(self) -> float:
    return self.done / max(time.monotonic() - self._start, 1e-9)

  def close(self) -> None:
    if self._enabled:
      self._print(final=True)

  def _print(self, final: bool) -> None:
    rate = self.rate()
    eta = (self._total - self.done) / rate if rate > 0 else 0.0
    line = (
      f"{self._label}: {self.done}/{self._total} images ({100 * self.done / max(self._total, 1):.0f}%), "
      f"{rate:,.0f} images/s, ETA {datetime.timedelta(seconds=round(eta))}"
    )
    if self._tty:
      sys.stderr.write("\r" + line + ("\n" if final else ""))
    else:
      sys.stderr.write(line + "\n")
    sys.stderr.flush()


class _ShardWriter:
  """Writes one split round-robin over its shards, counting the records in each."""

  def __init__(self, folder: str, split: str, num_shards: int):
    self.paths = [
      os.path.join(folder, records.shard_name(split, i, num_shards)) for i in range(num_shards)
    ]
    # One record per chunk (random access), uncompressed: raw pixels of photos barely
    # compress, and zstd would cost the writer ~4x the time per record.
    self._writers = [ArrayRecordWriter(path, WRITER_OPTIONS) for path in self.paths]
    self.lengths = [0] * num_shards  # Records per shard (TFDS's shard lengths).
    self.count = 0

  def write(self, record: bytes) -> None:
    shard = self.count % len(self._writers)
    self._writers[shard].write(record)
    self.lengths[shard] += 1
    self.count += 1

  def close(self) -> None:
    for writer in self._writers:
      writer.close()


def _num_shards(num_items: int, options: Options) -> int:
  wanted = options.num_shards or math.ceil(num_items / RECORDS_PER_SHARD)
  return max(1, min(wanted, num_items))


def _write_split(
  folder: str,
  split: str,
  items: list[Item],
  outcomes: Iterator[_Outcome],
  progress: ConversionProgress,
  skips: Skips,
  options: Options,
) -> tuple[dict[str, int], list[str], list[int]]:
  """Writes the next len(items) outcomes as `split`.

  Returns:
    (its counts, its text: captions, context captions, questions and answers, the number
    of records in each shard).
  """
  writer = _ShardWriter(folder, split, _num_shards(len(items), options))
  num_captions = 0
  text: list[str] = []
  try:
    for _ in items:
      outcome = next(outcomes)
      progress.update()
      if outcome.record is None:
        skips.add(outcome.skip_reason, outcome.skip_detail)
        continue
      writer.write(outcome.record)
      num_captions += len(outcome.captions)
      text += [*outcome.captions, *outcome.other_text]
  finally:
    writer.close()
  if writer.count == 0:
    raise PrepareError(f"no usable images in the {split} split (skipped: {skips.summary()})")
  counts = {"images": writer.count, "captions": num_captions, "shards": len(writer.paths)}
  return counts, text, writer.lengths


def _write_dataset(
  folder: str, source: str, items: dict[str, list[Item]], skips: Skips, options: Options
) -> tuple[dict[str, Any], float]:
  """Converts and writes every split, then the tokenizer (trained on the train split's
  text only: captions, context captions, dialogue questions and answers) and the TFDS
  metadata.

  Returns:
    (counts per split, images per second).
  """
  total = sum(len(items[split]) for split in records.SPLITS)
  progress = ConversionProgress(source, total, options.progress)
  outcomes = _outcomes([item for split in records.SPLITS for item in items[split]], options)
  counts, text, shard_lengths = {}, {}, {}
  try:
    for split in records.SPLITS:
      counts[split], text[split], shard_lengths[split] = _write_split(
        folder, split, items[split], outcomes, progress, skips, options
      )
  finally:
    outcomes.close()  # Stops the pool early when a split failed.
  progress.close()
  rate = progress.rate()  # Conversion only: the tokenizer is trained next.
  tokenizer.train(text["train"], os.path.join(folder, records.TOKENIZER_FILE), options.vocab_size)
  tfds_export.write_metadata(
    folder,
    shard_lengths,
    description=f"Captioned 64x64 images from the {source!r} source, written by "
    "data_prep.prepare (see metadata.json beside this file).",
  )
  return counts, rate


# --- entry point ---------------------------------------------------------------------------------


def _install(temporary: str, output_dir: str, overwrite: bool) -> None:
  """Renames the finished folder into place; an old one goes only after that succeeded."""
  if not os.path.lexists(output_dir) or _is_empty_dir(output_dir):
    os.replace(temporary, output_dir)
    return
  if not overwrite:
    raise PrepareError(
      f"output folder already exists: {output_dir} (pass --overwrite to replace it)"
    )
  name = os.path.basename(output_dir)
  old = _sibling_dir(output_dir, "old")
  os.replace(output_dir, os.path.join(old, name))
  try:
    os.replace(temporary, output_dir)
  except OSError:
    os.replace(os.path.join(old, name), output_dir)
    raise
  shutil.rmtree(old, ignore_errors=True)


def _sibling_dir(path: str, tag: str) -> str:
  """Creates a new hidden folder next to `path` (same file system, so renames are atomic)."""
  parent, name = os.path.split(path)
  while True:
    candidate = os.path.join(parent, f".{name}.{tag}-{secrets.token_hex(4)}")
    try:
      os.mkdir(candidate)  # Unlike mkdtemp, honours the umask: the result is the dataset.
      return candidate
    except FileExistsError:
      continue


def _is_empty_dir(path: str) -> bool:
  return os.path.isdir(path) and not os.path.islink(path) and not os.listdir(path)


def prepare(source: str, input_dir: str, output_dir: str, **options: Any) -> dict[str, Any]:
  """Converts one source into a prepared dataset folder (see inpainting/records.py).

  Args:
    source: one of SOURCES.
    input_dir: the source's folder ("" for synthetic scenes; a file for sources whose
      module sets INPUT_IS_FILE, e.g. sketchrnn's .npz).
    output_dir: the dataset folder to create; must not exist unless overwrite=True.
    **options: fields of `Options` (vocab_size, grayscale, num_shards, seed, num_train,
      num_validation, workers, overwrite, progress, classes, line_width, augment).

  Returns:
    The metadata written to metadata.json.

  Raises:
    PrepareError: unknown source or option, missing input, no usable images, output
      folder already there.
  """
  if source not in SOURCES:
    raise PrepareError(f"unknown source {source!r}; expected one of {', '.join(SOURCES)}")
  unknown = sorted(set(options) - {f.name for f in dataclasses.fields(Options)})
  if unknown:
    raise PrepareError(f"unknown options: {', '.join(unknown)}")
  opts = Options(**options)
  opts.validate()
  if not output_dir:
    raise PrepareError("no output folder given (--output_dir)")
  output_dir = os.path.abspath(os.path.expanduser(output_dir))
  if os.path.lexists(output_dir) and not opts.overwrite and not _is_empty_dir(output_dir):
    raise PrepareError(
      f"output folder already exists: {output_dir} (pass --overwrite to replace it)"
    )
  module = importlib.import_module(f"data_prep.sources.{source}")
  if source != "synthetic":
    if not input_dir:
      raise PrepareError(f"--input is required for source {source}")
    input_dir = os.path.abspath(os.path.expanduser(input_dir))
    input_dir = (require_file if getattr(module, "INPUT_IS_FILE", False) else require_dir)(
      input_dir
    )

  skips = Skips()
  items = module.collect(input_dir, opts, skips)
  if not any(items.get(split) for split in records.SPLITS):
    raise PrepareError(
      f"no usable images found in {input_dir or source} (skipped: {skips.summary()})"
    )

  os.makedirs(os.path.dirname(output_dir), exist_ok=True)
  temporary = _sibling_dir(output_dir, "partial")
  try:
    counts, images_per_second = _write_dataset(temporary, source, items, skips, opts)
    metadata = {
      "source": source,
      "format_version": records.FORMAT_VERSION,
      "image_size": records.IMAGE_SIZE,
      "input": input_dir,
      "preprocessing": module.PREPROCESSING,
      "grayscale": opts.grayscale,
      "seed": opts.seed,
      "counts": counts,
      "skipped": skips.counts(),
      "num_skipped": len(skips.entries),
      "tokenizer": records.TOKENIZER_FILE,
      "vocab_size": opts.vocab_size,
      "tokenizer_vocab_size": tokenizer.Tokenizer(
        os.path.join(temporary, records.TOKENIZER_FILE)
      ).vocab_size,
      "created": {
        "by": "data_prep.prepare",
        "time": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "pillow": PIL.__version__,
        "images_per_second": round(images_per_second, 1),
      },
      **getattr(module, "extra_metadata", lambda _: {})(opts),
    }
    with open(os.path.join(temporary, records.METADATA_FILE), "w", encoding="utf-8") as f:
      json.dump(metadata, f, indent=2, ensure_ascii=False)
      f.write("\n")
    with open(os.path.join(temporary, records.SKIPPED_FILE), "w", encoding="utf-8") as f:
      f.writelines(f"{reason}\t{what}\n" for reason, what in skips.entries)
    _install(temporary, output_dir, opts.overwrite)
  finally:
    if os.path.exists(temporary):
      shutil.rmtree(temporary, ignore_errors=True)
  return metadata

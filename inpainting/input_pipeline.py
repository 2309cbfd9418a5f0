"""Grain input pipeline: prepared ArrayRecord shards -> per-process numpy batches.

What happens, in order (see `create_dataset`):

  record indices 0..N-1 of the split
  -> train only: a seeded shuffle that differs every epoch, repeated forever (the same
     global order on every process)
  -> global batch i = positions [i*G, (i+1)*G) of that order (G = global batch size);
     process p takes its own slice [i*G + p*b, i*G + (p+1)*b) (b = G / process count)
  -> per batch: read (one ArrayRecord call per shard), decode, pick one caption per
     example, optional word noise on the text (training), optional horizontal flip,
     uint8 -> float32 [-1, 1], masks, caption mode (empty / shuffled), one
     `encode` call of the tokenizer
  -> thread prefetch (grain ReadOptions), optionally worker processes (grain mp_prefetch)

Why batches, not examples, flow through grain: profiled on a 2-core host, grain's
per-element machinery (slice + `index_shuffle` + repeat ~15 us, per-element random_map and
the ArrayRecordDataSource wrapper ~20 us more) cost more than the data work itself. So the
grain dataset is `MapDataset.range(num_batches)` with one `map` that builds a whole
batch: the shuffle is a numpy permutation per epoch (same semantics as grain's
shuffle-then-repeat: every epoch a new order, each example once per epoch), records are
read with one ArrayRecord call per shard, and everything after decoding is vectorised
numpy. Only the record read and the JSON header parse are per example.

Randomness is deterministic and independent of the process count: the epoch permutation
depends on (seed, epoch); the caption choice, flips and random boxes of an example are a
hash of (seed, its position in the global stream), so they change every epoch. Hence the
global batches of a run are the same on 1 process or on 8, and every process reads a
disjoint slice of each (the union over processes is exactly one pass per epoch).

A batch is a dict of numpy arrays with leading axis b (the per-process batch size), built
by `batching.assemble` with the family's `BatchSpec` (see inpainting/batching.py for the
fields every batch has).

Checkpointing: `iter(dataset)` is a grain `DatasetIterator`. `iterator.get_state()` is a
small JSON-serialisable dict ({"next_index": batches returned so far}, or per-worker
states when data.num_workers > 0); `iterator.set_state(state)` on a fresh iterator of an
identically configured dataset yields exactly the batches that would have followed.
Prefetch does not disturb this: the state counts batches returned, not batches prefetched,
and every batch is a pure function of its index.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Sequence
from typing import Any

import grain
import ml_collections
import numpy as np
from absl import flags
from array_record.python.array_record_module import ArrayRecordReader

from inpainting import batching, masks, records
from inpainting import tokenizer as tokenizers
from inpainting.tokenizer import TextTokenizer

# Offset of the seed of the word-noise uniforms (a stream apart from the caption pick's).
_WORD_NOISE_STREAM = 1 << 32
# Threads preparing batches ahead; more only contend for the GIL on small hosts.
_PREFETCH_THREADS = 2
# Reader options for random access (no readahead), as grain's ArrayRecordDataSource uses.
_READER_OPTIONS = "readahead_buffer_size:0,max_parallelism:0"


class RecordReader:
  """Random access to the records of one split, with batched reads.

  A grain random-access source (`len`, `[i]`), plus `read_batch`, which issues one
  ArrayRecord read per shard for a whole batch instead of one Python call per record
  (about half the cost on a small host). Readers open lazily, so the object pickles for
  grain worker processes.
  """

  def __init__(self, paths: Sequence[str]):
    self._paths = list(paths)
    counts = []
    for path in self._paths:
      reader = ArrayRecordReader(path, _READER_OPTIONS)
      counts.append(reader.num_records())
      reader.close()
    self._ends = np.cumsum(counts)  # exclusive end key of each shard
    self._readers: list[ArrayRecordReader | None] = [None] * len(self._paths)
    self._lock = threading.Lock()

  def __getstate__(self):
    state = self.__dict__.copy()
    state["_readers"] = [None] * len(self._paths)
    del state["_lock"]
    return state

  def __setstate__(self, state):
    self.__dict__.update(state)
    self._lock = threading.Lock()

  def __len__(self) -> int:
    return int(self._ends[-1]) if len(self._ends) else 0

  def __getitem__(self, key: int) -> bytes:
    return self.read_batch(np.array([key]))[0]

  def _reader(self, shard: int) -> ArrayRecordReader:
    if self._readers[shard] is None:
      with self._lock:
        if self._readers[shard] is None:
          self._readers[shard] = ArrayRecordReader(
            self._paths[shard], _READER_OPTIONS, file_reader_buffer_size=32768
          )
    return self._readers[shard]

  def read_batch(self, keys: np.ndarray) -> list[bytes]:
    """The records at `keys` (global indices across shards), in the order given."""
    keys = np.asarray(keys, np.int64)
    if len(keys) and (keys.min() < 0 or keys.max() >= len(self)):
      raise IndexError(f"record keys out of range [0, {len(self)})")
    shards = np.searchsorted(self._ends, keys, side="right")
    starts = np.concatenate([[0], self._ends[:-1]])
    out: list[bytes] = [b""] * len(keys)
    for shard in np.unique(shards):
      where = np.flatnonzero(shards == shard)
      positions = (keys[where] - starts[shard]).tolist()
      for i, record in zip(where.tolist(), self._reader(shard).read(positions)):
        out[i] = record
    return out


class _BatchKeys:
  """Which record indices (and global stream positions) make up this process's batch i.

  Train: the stream is an endless sequence of epochs, each a fresh seeded permutation of
  all records (a batch may straddle two epochs, so no example is ever dropped). Eval: the
  records in order. Global batch i covers stream positions [i*G, (i+1)*G); this process
  takes [i*G + p*b, i*G + (p+1)*b). In eval the last global batch may be short, so a
  process's last batch may be smaller, and a process may have one batch fewer.
  """

  def __init__(
    self,
    num_records: int,
    batch_size: int,
    train: bool,
    seed: int,
    process_index: int = 0,
    process_count: int = 1,
  ):
    self._num_records = num_records
    self._batch_size = batch_size
    self._global_batch_size = batch_size * process_count
    self._offset = batch_size * process_index
    self._train = train
    self._seed = seed
    self._permutations: dict[int, np.ndarray] = {}
    self._lock = threading.Lock()

  def __getstate__(self):
    state = self.__dict__.copy()
    state["_permutations"] = {}
    del state["_lock"]
    return state

  def __setstate__(self, state):
    self.__dict__.update(state)
    self._lock = threading.Lock()

  def num_batches(self) -> int:
    if self._train:
      return sys.maxsize  # endless
    # Batches whose slice for this process is not empty.
    return max(0, -(-(self._num_records - self._offset) // self._global_batch_size))

  def _permutation(self, epoch: int) -> np.ndarray:
    with self._lock:
      permutation = self._permutations.get(epoch)
    if permutation is None:
      permutation = np.random.default_rng([self._seed, epoch]).permutation(self._num_records)
      with self._lock:
        # Keep the two most recent epochs: prefetch threads may straddle a boundary.
        self._permutations[epoch] = permutation
        for old in sorted(self._permutations)[:-2]:
          del self._permutations[old]
    return permutation

  def __call__(self, batch_index: int) -> tuple[np.ndarray, np.ndarray]:
    """(record keys [b], global stream positions [b]) of this process's batch."""
    start = batch_index * self._global_batch_size + self._offset  # Python int: no overflow
    if not self._train:
      stop = min(start + self._batch_size, self._num_records)
      positions = np.arange(start, stop, dtype=np.int64)
      return positions, positions
    count = self._num_records
    first_epoch, first_offset = divmod(start, count)
    offsets = first_offset + np.arange(self._batch_size)
    epoch_steps, offsets = np.divmod(offsets, count)
    keys = np.empty(self._batch_size, np.int64)
    for step in np.unique(epoch_steps):
      where = epoch_steps == step
      keys[where] = self._permutation(first_epoch + int(step))[offsets[where]]
    positions = np.uint64(start) + np.arange(self._batch_size, dtype=np.uint64)
    return keys, positions


def _uniforms(seed: int, positions: np.ndarray, count: int) -> np.ndarray:
  """float64 [len(positions), count] in [0, 1): a hash (splitmix64) of (seed, position, k).

  Per-example randomness that depends only on where the example sits in the global
  stream, not on which process or batch draws it.
  """
  with np.errstate(over="ignore"):
    base = np.asarray(positions, np.uint64) * np.uint64(count) + np.uint64(seed) * np.uint64(
      0x9E3779B97F4A7C15
    )
    z = base[:, None] + np.arange(1, count + 1, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
  return (z >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def _mirror(pixels: np.ndarray) -> np.ndarray:
  """Horizontal flip of uint8 [n, H, W, C] images.

  One `np.take` over rows seen as H x (W*C) bytes with a precomputed column order: numpy's
  strided copy of `pixels[:, :, ::-1]` moves 3-byte pixels one by one and is ~3x slower.
  """
  n, height, width, channels = pixels.shape
  columns = (np.arange(width - 1, -1, -1)[:, None] * channels + np.arange(channels)).ravel()
  rows = pixels.reshape(n, height, width * channels)
  return np.take(rows, columns, axis=2).reshape(pixels.shape)


class _LoadBatch(grain.transforms.Map):
  """Batch index -> finished batch (`batching.assemble` with the family's BatchSpec).

  The caption choice, flips and random boxes come from `_uniforms` of each example's
  global stream position (see the module docstring). The tokenizer loads lazily, so the
  transform pickles for worker processes.
  """

  def __init__(
    self,
    reader: RecordReader,
    batch_keys: _BatchKeys,
    tokenizer_path: str,
    max_caption_length: int,
    mask: masks.MaskSpec,
    caption_mode: str,
    random_caption: bool,
    random_flip: bool,
    seed: int,
    spec: batching.BatchSpec,
    text_source: str = "caption",
    word_noise: tuple[float, float] = (0.0, 0.0),
  ):
    self._seed = seed
    self._word_noise = word_noise
    self._spec = spec
    self._reader = reader
    self._batch_keys = batch_keys
    self._tokenizer_path = tokenizer_path
    self._max_caption_length = max_caption_length
    self._mask = mask
    self._caption_mode = caption_mode
    self._random_caption = random_caption
    self._random_flip = random_flip
    self._text_source = text_source
    self._tokenizer: TextTokenizer | None = None

  def __getstate__(self):
    state = self.__dict__.copy()
    state["_tokenizer"] = None  # SentencePiece handles do not pickle; reload in the worker.
    return state

  @property
  def tokenizer(self) -> TextTokenizer:
    if self._tokenizer is None:
      self._tokenizer = tokenizers.load(self._tokenizer_path)
    return self._tokenizer

  def map(self, batch_index: int) -> dict[str, Any]:
    keys, positions = self._batch_keys(batch_index)
    examples = [records.decode(r) for r in self._reader.read_batch(keys)]
    size = len(examples)
    # Columns: caption pick, flip, then 4 for a random box.
    uniforms = _uniforms(self._seed, positions, 6)

    # One caption per example: a uniform pick among its own, or the first.
    counts = np.array([len(e.captions) for e in examples])
    if self._random_caption:
      picks = (uniforms[:, 0] * counts).astype(np.int64).tolist()
    else:
      picks = [0] * size
    if self._text_source == "caption":
      captions = [e.captions[p] if e.captions else "" for e, p in zip(examples, picks)]
    else:
      # A `...:any` source in training: a prefix of 0..all turns from the same uniform
      # (conversation sources pick no caption); evaluation reads every turn.
      kept = [None] * size
      if self._random_caption and batching.draws_turns(self._text_source):
        kept = [int(u * (len(e.dialogue) + 1)) for u, e in zip(uniforms[:, 0], examples)]
      captions = [
        batching.conversation_text(e, self._text_source, k) for e, k in zip(examples, kept)
      ]
    if any(self._word_noise):  # Training only (see create_dataset).
      word_uniforms = _uniforms(
        self._seed + _WORD_NOISE_STREAM, positions, 2 * batching.MAX_PERTURBED_WORDS
      )
      captions = batching.perturb_words(captions, word_uniforms, *self._word_noise)
    if self._caption_mode == "empty":
      captions = [""] * size
    elif self._caption_mode == "shuffled":
      # A fixed derangement: every example gets its batch neighbour's caption.
      captions = captions[-1:] + captions[:-1]
    pixels = np.stack([e.image for e in examples])  # uint8 [b, H, W, 3], our own copy
    height, width = pixels.shape[1:3]
    if self._random_flip:
      flip = uniforms[:, 1] < 0.5
      pixels[flip] = _mirror(pixels[flip])
    mask = masks.make_batch(self._mask, size, height, width, uniforms=uniforms[:, 2:])
    return batching.assemble(
      examples,
      pixels,
      mask,
      captions,
      self.tokenizer,
      self._max_caption_length,
      self._spec,
      index=keys.astype(np.int64),
    )


def _check_data_dir(data_dir: str, split: str, tokenizer_path: str) -> list[str]:
  """Returns the split's shard paths; ValueError (one line) if there are none."""
  if not os.path.isdir(data_dir):
    raise ValueError(f"data folder {data_dir!r} does not exist")
  paths = records.shard_paths(data_dir, split)
  if not paths:
    raise ValueError(f"data folder {data_dir!r} has no {split}.array_record-* shards")
  if not os.path.isfile(tokenizer_path):
    raise ValueError(f"no tokenizer at {tokenizer_path!r}")
  return paths


def create_dataset(
  data_dir: str,
  split: str,
  data_config: ml_collections.ConfigDict,
  batch_size: int,
  *,
  seed: int,
  train: bool,
  process_index: int = 0,
  process_count: int = 1,
  caption_mode: str | None = None,
  spec: batching.BatchSpec = batching.DEFAULT_SPEC,
  tokenizer_path: str | None = None,
) -> grain.IterDataset:
  """Builds the batched, prefetched dataset of one split for this process.

  Args:
    data_dir: a prepared dataset folder (see inpainting/records.py).
    split: "train" or "validation".
    data_config: `config.data`; uses mask, random_flip, caption, text_source,
      max_caption_length, word_dropout, word_swap, num_workers and prefetch_batches.
    batch_size: the PER-PROCESS batch size (global batch size / process count).
    seed: seeds the shuffle, caption choice, flips and random masks (>= 0).
    train: True: shuffled, repeated forever, every batch full (batches straddle epoch
      boundaries, so nothing is dropped); flips and word noise apply. False: one pass in
      record order with no flips or word noise, and the last batch may be smaller (like
      drop_remainder=False), so processes with unequal shares can yield a different
      number of batches; callers that need equal counts across processes must take a
      fixed number of batches.
    process_index, process_count: this process's share: a contiguous slice of every
      global batch (disjoint, and complete across processes; see the module docstring).
    caption_mode: overrides data_config.caption: "random" (one caption per example per
      epoch, seeded), "first" (caption 0), "empty" (no caption: all-padding tokens) or
      "shuffled" (each example gets its batch neighbour's caption, never its own, except
      in a last eval batch of one; the neighbour's caption is random when `train`, else
      its first).
    spec: the model family's BatchSpec (which fields a batch carries).
    tokenizer_path: the tokenizer to tokenise with (`inpainting.tokenizer.load`); default:
      the data folder's SentencePiece model.
      A trained run passes its own, so it can be evaluated on any prepared folder.

  Returns:
    A grain IterDataset of batches (see the module docstring); `iter()` it for a
    checkpointable iterator.

  Raises:
    ValueError: (one line) missing data folder or shards, bad mask, caption mode,
      batch size, seed or process index.
  """
  if tokenizer_path is None:
    tokenizer_path = os.path.join(data_dir, records.TOKENIZER_FILE)
  paths = _check_data_dir(data_dir, split, tokenizer_path)
  mode = data_config.caption if caption_mode is None else caption_mode
  if mode not in batching.CAPTION_MODES:
    choices = ", ".join(batching.CAPTION_MODES)
    raise ValueError(f"unknown caption mode {mode!r}; choose one of {choices}")
  if batch_size < 1:
    raise ValueError(f"batch size must be positive, got {batch_size}")
  if mode == "shuffled" and batch_size < 2:
    raise ValueError("caption mode 'shuffled' needs a batch size of at least 2")
  if not 0 <= process_index < process_count:
    raise ValueError(f"process index {process_index} is not in [0, {process_count})")
  if seed < 0:
    raise ValueError(f"seed must be >= 0, got {seed}")
  mask = masks.parse(data_config.mask)
  text_source = batching.text_source_of(data_config)
  batching.parse_text_source(text_source)

  word_noise = (
    float(data_config.get("word_dropout", 0.0)),
    float(data_config.get("word_swap", 0.0)),
  )
  if not all(0.0 <= p < 1.0 for p in word_noise):
    raise ValueError(f"data.word_dropout and data.word_swap must be in [0, 1), got {word_noise}")
  word_noise = word_noise if train else (0.0, 0.0)

  reader = RecordReader(paths)
  if text_source != "caption" and len(reader):  # One-line error now, not in a worker later.
    batching.conversation_text(records.decode(reader[0]), text_source)
  batch_keys = _BatchKeys(len(reader), batch_size, train, seed, process_index, process_count)
  if train and len(reader) < batch_size * process_count:
    raise ValueError(
      f"data folder {data_dir!r}: {len(reader)} {split} records, fewer than one global batch"
    )
  load = _LoadBatch(
    reader,
    batch_keys,
    tokenizer_path=tokenizer_path,
    max_caption_length=data_config.max_caption_length,
    mask=mask,
    caption_mode=mode,
    random_caption=mode == "random" or (mode == "shuffled" and train),
    random_flip=bool(data_config.random_flip) and train,
    seed=seed,
    spec=spec,
    text_source=text_source,
    word_noise=word_noise,
  )
  ds = grain.MapDataset.range(batch_keys.num_batches()).map(load)

  prefetch = int(data_config.prefetch_batches)
  num_threads = min(prefetch, _PREFETCH_THREADS)
  it_ds = ds.to_iter_dataset(
    grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=prefetch)
  )
  if data_config.num_workers > 0:
    # Grain's worker processes read absl flags; outside an absl app use their defaults.
    if not flags.FLAGS.is_parsed():
      flags.FLAGS.mark_as_parsed()
    it_ds = it_ds.mp_prefetch(
      grain.MultiprocessingOptions(
        num_workers=int(data_config.num_workers), per_worker_buffer_size=max(prefetch, 1)
      )
    )
  return it_ds


def first_examples(dataset, limit: int):
  """The batches of a one-pass (eval) dataset up to its first `limit` examples; the last
  batch is cut to fit."""
  seen = 0
  for batch in dataset:
    if seen >= limit:
      return
    take = min(len(batch["image"]), limit - seen)
    seen += take
    yield {k: v[:take] for k, v in batch.items()}


def make_train_iterator(
  data_dir: str,
  data_config: ml_collections.ConfigDict,
  batch_size: int,
  *,
  seed: int,
  process_index: int = 0,
  process_count: int = 1,
  state: dict[str, Any] | None = None,
  spec: batching.BatchSpec = batching.DEFAULT_SPEC,
) -> grain.DatasetIterator:
  """The training iterator, restored to `state` (from `get_state()`) if given."""
  ds = create_dataset(
    data_dir,
    "train",
    data_config,
    batch_size,
    seed=seed,
    train=True,
    process_index=process_index,
    process_count=process_count,
    spec=spec,
  )
  iterator = iter(ds)
  if state is not None:
    iterator.set_state(state)
  return iterator

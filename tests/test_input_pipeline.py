"""The grain input pipeline on a tiny ArrayRecord fixture built here (no data_prep)."""

import collections
import json
import os

import numpy as np
import pytest
from array_record.python.array_record_module import ArrayRecordWriter

from configs import common
from inpainting import batching, input_pipeline, records, tokenizer

NUM_EXAMPLES = 40
COLOURS = ["red", "green", "blue", "yellow", "purple", "orange", "white", "black"]
SHAPES = ["circle", "square", "star", "triangle", "heart"]


def _caption(rng: np.random.Generator, number: int) -> str:
  colour, shape = rng.choice(COLOURS), rng.choice(SHAPES)
  return f"a {colour} {shape} number {number} on a {rng.choice(COLOURS)} background"


def build_fixture(data_dir: str, num_examples: int = NUM_EXAMPLES, num_shards: int = 2) -> dict:
  """Writes `num_examples` train and 10 validation records plus a tokenizer.

  Returns:
    {split: list of records.Example} in record order.
  """
  os.makedirs(data_dir, exist_ok=True)
  rng = np.random.default_rng(1234)
  written = {}
  for split, count in (("train", num_examples), ("validation", 10)):
    examples = []
    for i in range(count):
      captions = [_caption(rng, 10 * i + k) for k in range(int(rng.integers(2, 6)))]
      scene = {"background": "grey", "objects": [{"shape": "star", "x": i}]} if i % 2 else None
      image = rng.integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
      examples.append(records.Example(f"{split}-{i:03d}", image, captions, scene))
    per_shard = -(-count // num_shards)
    for s in range(num_shards):
      writer = ArrayRecordWriter(
        os.path.join(data_dir, records.shard_name(split, s, num_shards)), "group_size:1"
      )
      for example in examples[s * per_shard : (s + 1) * per_shard]:
        writer.write(records.encode(example))
      writer.close()
    written[split] = examples
  all_captions = [c for e in written["train"] for c in e.captions]
  tokenizer.train(all_captions, os.path.join(data_dir, records.TOKENIZER_FILE), vocab_size=64)
  counts = {split: len(v) for split, v in written.items()}
  with open(os.path.join(data_dir, records.METADATA_FILE), "w") as f:
    json.dump({"source": "test", "counts": counts, "version": records.FORMAT_VERSION}, f)
  return written


@pytest.fixture(scope="module")
def fixture(tmp_path_factory):
  data_dir = str(tmp_path_factory.mktemp("data"))
  return data_dir, build_fixture(data_dir)


def data_config(**overrides):
  config = common.base().data
  config.max_caption_length = 16
  config.update(overrides)
  return config


def take(iterator, count):
  return [next(iterator) for _ in range(count)]


def train_iter(data_dir, batch_size=8, seed=0, **overrides):
  ds = input_pipeline.create_dataset(
    data_dir, "train", data_config(**overrides), batch_size, seed=seed, train=True
  )
  return iter(ds)


def test_batch_shapes_dtypes_and_content(fixture):
  data_dir, examples = fixture
  batch = next(train_iter(data_dir))
  b, length = 8, 16
  assert batch["image"].shape == (b, 64, 64, 3) and batch["image"].dtype == np.float32
  assert batch["image"].min() >= -1.0 and batch["image"].max() <= 1.0
  assert batch["mask"].shape == (b, 64, 64, 1) and batch["mask"].dtype == np.float32
  assert batch["tokens"].shape == (b, length) and batch["tokens"].dtype == np.int32
  assert batch["token_mask"].dtype == bool
  np.testing.assert_array_equal(batch["token_mask"], batch["tokens"] != 0)
  assert batch["token_mask"][:, 0].all()  # every caption has at least BOS
  assert batch["index"].dtype == np.int64
  for key in ("id", "caption", "scene"):
    assert batch[key].dtype.kind == "U" and batch[key].shape == (b,)
  for i, index in enumerate(batch["index"]):
    example = examples["train"][index]
    assert batch["id"][i] == example.id
    assert batch["caption"][i] in example.captions
    expected = example.image.astype(np.float32) / 127.5 - 1.0
    np.testing.assert_allclose(batch["image"][i], expected, atol=1e-6)
    if example.scene is None:
      assert batch["scene"][i] == ""
    else:
      assert json.loads(batch["scene"][i]) == example.scene


def test_extreme_pixels_map_to_exactly_minus_one_and_one(tmp_path):
  build_fixture(str(tmp_path), num_examples=4, num_shards=1)
  # Overwrite with a black and a white image (the tokenizer stays).
  writer = ArrayRecordWriter(str(tmp_path / records.shard_name("train", 0, 1)), "group_size:1")
  for value in (0, 255):
    image = np.full((64, 64, 3), value, np.uint8)
    writer.write(records.encode(records.Example(f"v{value}", image, ["a red star"])))
  writer.close()
  batch = next(
    iter(
      input_pipeline.create_dataset(str(tmp_path), "train", data_config(), 2, seed=0, train=False)
    )
  )
  assert batch["image"][0].max() == -1.0 and batch["image"][1].min() == 1.0


def test_center_mask_is_exactly_the_middle(fixture):
  data_dir, _ = fixture
  mask = next(train_iter(data_dir))["mask"]
  expected = np.zeros((8, 64, 64, 1), np.float32)
  expected[:, 16:48, 16:48] = 1.0
  np.testing.assert_array_equal(mask, expected)


def test_order_is_seeded_and_reshuffled_every_epoch(fixture):
  data_dir, _ = fixture
  per_epoch = NUM_EXAMPLES // 8

  def order(seed):
    batches = take(train_iter(data_dir, seed=seed), 2 * per_epoch)
    return np.concatenate([b["index"] for b in batches])

  first, again, other = order(0), order(0), order(1)
  np.testing.assert_array_equal(first, again)
  assert not np.array_equal(first, other)
  epoch1, epoch2 = first[:NUM_EXAMPLES], first[NUM_EXAMPLES:]
  # Each epoch is a permutation of every example, and the two differ.
  assert sorted(epoch1) == list(range(NUM_EXAMPLES)) == sorted(epoch2)
  assert not np.array_equal(epoch1, epoch2)
  assert not np.array_equal(epoch1, np.arange(NUM_EXAMPLES))


def test_random_caption_changes_across_epochs_and_first_is_fixed(fixture):
  data_dir, examples = fixture
  epochs = 4
  chosen = {}
  for batch in take(train_iter(data_dir), epochs * NUM_EXAMPLES // 8):
    for index, caption in zip(batch["index"], batch["caption"]):
      chosen.setdefault(int(index), []).append(str(caption))
  varied = [len(set(c)) > 1 for c in chosen.values()]
  # P(same caption 4 epochs running) <= 1/8 for >= 2 captions; most must vary.
  assert sum(varied) > NUM_EXAMPLES // 2
  for batch in take(train_iter(data_dir, caption="first"), NUM_EXAMPLES // 8):
    for index, caption in zip(batch["index"], batch["caption"]):
      assert caption == examples["train"][index].captions[0]


def test_empty_captions_are_all_padding(fixture):
  data_dir, _ = fixture
  batch = next(train_iter(data_dir, caption="empty"))
  assert not batch["token_mask"].any() and not batch["tokens"].any()
  assert all(c == "" for c in batch["caption"])


def test_shuffled_captions_come_from_the_batch_neighbour(fixture):
  data_dir, examples = fixture
  ds = input_pipeline.create_dataset(
    data_dir, "train", data_config(), 8, seed=0, train=False, caption_mode="shuffled"
  )
  tok = tokenizer.Tokenizer(os.path.join(data_dir, records.TOKENIZER_FILE))
  for batch in ds:
    firsts = [examples["train"][i].captions[0] for i in batch["index"]]
    assert list(batch["caption"]) == firsts[-1:] + firsts[:-1]
    for i, index in enumerate(batch["index"]):
      assert batch["caption"][i] not in examples["train"][index].captions
    tokens, _ = tok.encode(list(batch["caption"]), 16)
    np.testing.assert_array_equal(batch["tokens"], tokens)


def test_iterator_state_restores_mid_epoch_exactly(fixture):
  data_dir, _ = fixture
  # Random masks and flips too: their generators must be restored as well.
  options = dict(mask="random_box", random_flip=True, prefetch_batches=3)
  iterator = train_iter(data_dir, seed=7, **options)
  take(iterator, 3)
  state = json.loads(json.dumps(iterator.get_state()))  # the trainer stores JSON
  expected = take(iterator, 4)  # crosses into epoch 2 (5 batches per epoch)
  restored = train_iter(data_dir, seed=7, **options)
  restored.set_state(state)
  got = take(restored, 4)
  for want, have in zip(expected, got):
    assert want.keys() == have.keys()
    for key in want:
      np.testing.assert_array_equal(want[key], have[key], err_msg=key)
  # The convenience helper restores the same way.
  helper = input_pipeline.make_train_iterator(
    data_dir, data_config(**options), 8, seed=7, state=state
  )
  np.testing.assert_array_equal(next(helper)["index"], expected[0]["index"])


def test_random_flip_mirrors_some_images(fixture):
  data_dir, examples = fixture
  batches = take(train_iter(data_dir, random_flip=True), 2)
  flipped = 0
  for batch in batches:
    for image, index in zip(batch["image"], batch["index"]):
      original = examples["train"][index].image.astype(np.float32) / 127.5 - 1.0
      if np.allclose(image, original[:, ::-1], atol=1e-6):
        flipped += 1
      else:
        np.testing.assert_allclose(image, original, atol=1e-6)
  assert 0 < flipped < 16


@pytest.mark.parametrize("process_count", [2, 3])
def test_process_shards_are_disjoint_and_complete(fixture, process_count):
  data_dir, _ = fixture
  local = 4

  def dataset(process_index, count, train, batch_size, **overrides):
    return input_pipeline.create_dataset(
      data_dir,
      "train",
      data_config(**overrides),
      batch_size,
      seed=0,
      train=train,
      process_index=process_index,
      process_count=count,
    )

  # Eval: one pass, each record read by exactly one process.
  shards = [
    np.concatenate([b["index"] for b in dataset(p, process_count, False, local)])
    for p in range(process_count)
  ]
  union = np.concatenate(shards)
  assert len(union) == len(set(union)) == NUM_EXAMPLES

  # Train: at every step the processes read disjoint slices, and together they read the
  # same global batch (same examples, captions, flips, boxes) as a single process does.
  overrides = {"random_flip": True, "mask": "random_box"}
  per_process = [
    take(iter(dataset(p, process_count, True, local, **overrides)), 6) for p in range(process_count)
  ]
  single = take(iter(dataset(0, 1, True, local * process_count, **overrides)), 6)
  first_epoch = []  # The steps that lie wholly inside the first epoch read no record twice.
  for step in range(6):
    parts = [per_process[p][step] for p in range(process_count)]
    if (step + 1) * local * process_count <= NUM_EXAMPLES:
      first_epoch.extend(np.concatenate([part["index"] for part in parts]))
    for key in ("index", "caption", "image", "mask", "tokens"):
      np.testing.assert_array_equal(
        np.concatenate([part[key] for part in parts]), single[step][key]
      )
  # 2 processes: 5 whole steps of 8 = all 40 records; 3 processes: 3 steps of 12 = 36.
  whole_steps = NUM_EXAMPLES // (local * process_count)
  assert len(first_epoch) == whole_steps * local * process_count >= NUM_EXAMPLES - 8
  assert len(set(first_epoch)) == len(first_epoch), sorted(first_epoch)
  assert set(first_epoch) <= set(range(NUM_EXAMPLES))


def test_batches_larger_than_the_data_span_epochs_without_dropping(fixture):
  data_dir, _ = fixture
  # Batches of 16 over 40 records straddle epochs; every epoch is one full permutation.
  ds = input_pipeline.create_dataset(data_dir, "train", data_config(), 16, seed=0, train=True)
  stream = np.concatenate([b["index"] for b in take(iter(ds), 10)])  # 160 = 4 epochs
  epochs = stream.reshape(4, NUM_EXAMPLES)
  for epoch in epochs:
    assert sorted(epoch) == list(range(NUM_EXAMPLES))
  assert len({tuple(e) for e in epochs}) > 1


def test_record_reader_reads_across_shards_in_the_order_given(fixture):
  data_dir, examples = fixture
  reader = input_pipeline.RecordReader(records.shard_paths(data_dir, "train"))
  assert len(reader) == NUM_EXAMPLES
  keys = np.array([39, 0, 21, 20, 19, 0])  # both shards, a repeat
  got = [records.decode(r).id for r in reader.read_batch(keys)]
  assert got == [examples["train"][k].id for k in keys]
  assert records.decode(reader[5]).id == examples["train"][5].id
  with pytest.raises(IndexError):
    reader.read_batch(np.array([NUM_EXAMPLES]))


def test_eval_keeps_the_last_partial_batch(fixture):
  data_dir, _ = fixture
  ds = input_pipeline.create_dataset(data_dir, "validation", data_config(), 4, seed=0, train=False)
  sizes = [len(b["index"]) for b in ds]
  assert sizes == [4, 4, 2]


def test_bad_data_dir_errors_name_the_folder(tmp_path):
  missing = str(tmp_path / "nowhere")
  with pytest.raises(ValueError, match="nowhere"):
    input_pipeline.create_dataset(missing, "train", data_config(), 4, seed=0, train=True)
  empty = tmp_path / "empty"
  empty.mkdir()
  with pytest.raises(ValueError, match=r"empty.*no train\.array_record"):
    input_pipeline.create_dataset(str(empty), "train", data_config(), 4, seed=0, train=True)


def test_bad_caption_mode_and_mask_raise(fixture):
  data_dir, _ = fixture
  with pytest.raises(ValueError, match="caption mode"):
    input_pipeline.create_dataset(
      data_dir, "train", data_config(), 4, seed=0, train=True, caption_mode="nope"
    )
  with pytest.raises(ValueError, match="unknown mask"):
    input_pipeline.create_dataset(
      data_dir, "train", data_config(mask="oval"), 4, seed=0, train=True
    )


def test_worker_processes_give_the_same_batches_and_a_restorable_state(fixture):
  data_dir, _ = fixture
  reference = take(train_iter(data_dir, seed=3), 4)
  iterator = train_iter(data_dir, seed=3, num_workers=1)
  try:
    first = take(iterator, 2)
    state = json.loads(json.dumps(iterator.get_state()))
    rest = take(iterator, 2)
  finally:
    iterator.close()
  for want, have in zip(reference, first + rest):
    np.testing.assert_array_equal(want["image"], have["image"])
    np.testing.assert_array_equal(want["tokens"], have["tokens"])
  restored = train_iter(data_dir, seed=3, num_workers=1)
  try:
    restored.set_state(state)
    np.testing.assert_array_equal(next(restored)["index"], reference[2]["index"])
  finally:
    restored.close()


def test_word_noise_drops_and_swaps_words_of_training_captions_only(fixture):
  data_dir, examples = fixture
  options = {"caption": "first", "word_dropout": 0.2, "word_swap": 0.3}
  batches = take(train_iter(data_dir, **options), 2 * NUM_EXAMPLES // 8)
  again = take(train_iter(data_dir, **options), 2 * NUM_EXAMPLES // 8)
  dropped = swapped = total = 0
  for batch, same in zip(batches, again):
    assert list(batch["caption"]) == list(same["caption"])  # Seeded: the same every time.
    for index, caption in zip(batch["index"], batch["caption"]):
      original = examples["train"][index].captions[0].split()
      words = str(caption).split()
      assert words and collections.Counter(words) <= collections.Counter(original)
      dropped += len(original) - len(words)
      kept = [w for w in original if w in words]
      swapped += words != kept
      total += len(original)
  assert 0.1 < dropped / total < 0.3, dropped / total
  assert swapped > NUM_EXAMPLES // 2  # Most of 80 captions have a swapped pair.
  # Evaluation batches keep their captions.
  ds = input_pipeline.create_dataset(
    data_dir, "train", data_config(**options), 8, seed=0, train=False
  )
  for batch in take(iter(ds), 2):
    for index, caption in zip(batch["index"], batch["caption"]):
      assert caption == examples["train"][index].captions[0]


def test_perturb_words_keeps_parts_and_a_word_per_part():
  text = batching.PART_BREAK.join(["a red star", "what colour red", "big yes"])
  always = np.zeros((1, 2 * batching.MAX_PERTURBED_WORDS))  # Every draw under p: all hit.
  (out,) = batching.perturb_words([text], always, 0.5, 0.0)
  parts = out.split(batching.PART_BREAK)
  assert [len(p.split()) for p in parts] == [1, 1, 1]
  (out,) = batching.perturb_words([text], always, 0.0, 0.5)
  assert out.split(batching.PART_BREAK) == ["red a star", "colour what red", "yes big"]
  never = np.ones((1, 2 * batching.MAX_PERTURBED_WORDS)) * 0.99
  assert batching.perturb_words([text], never, 0.5, 0.5) == [text]


def test_word_noise_out_of_range_is_a_one_line_error(fixture):
  data_dir, _ = fixture
  with pytest.raises(ValueError, match="word_dropout and data.word_swap must be in"):
    train_iter(data_dir, word_dropout=1.0)

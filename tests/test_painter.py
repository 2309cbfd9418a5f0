"""The multi-turn `painter` family: per-part text, state carried across turns, trained and
evaluated turn by turn through the unchanged trainer and evaluate."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from configs import common
from configs import painter as painter_config
from inpainting import batching, evaluate, tokenizer, train
from inpainting.errors import UserError
from inpainting.models import painter, registry
from tests.test_families import KEY, randomized
from tests.test_models import built, fast_jit, make_batch

NUM_EXAMPLES = 8


def _first_parts(batch, last: int):
  """`batch` with the conversation cut after part `last` (what the first turns give)."""
  keep = batch["token_mask"] & (batch["segments"] <= last)
  return {
    **batch,
    "tokens": jnp.where(keep, batch["tokens"], 0),
    "token_mask": keep,
    "segments": jnp.where(keep, batch["segments"], 0),
  }


@pytest.fixture(scope="module", params=["painter", "painter_no_latent"])
def canvases_fn(request):
  """(canvases(state, batch), randomised state); with a latent, for one fixed noise eps
  (each rollout reads the same eps at every part, as sampling does)."""
  config, family, graphdef, state = built(request.param)
  eps = None
  if config.model.z_dim:
    eps = jax.random.normal(jax.random.key(5), (make_batch()["image"].shape[0], config.model.z_dim))

  def canvases(s, b):
    return painter.canvases(nnx.merge(graphdef, s), b, eps)

  fn = fast_jit(canvases, state, make_batch())
  return (lambda s, b: np.asarray(fn(s, b))), randomized(state)


def test_the_completion_of_the_first_turns_is_that_turn_of_the_whole_rollout(canvases_fn):
  canvases, state = canvases_fn
  batch = make_batch(empty_first_caption=False)
  whole = canvases(state, batch)
  assert whole.shape == (4, 4, 64, 64, 3)
  for last in range(4):
    cut = canvases(state, _first_parts(batch, last))
    np.testing.assert_allclose(cut[-1], whole[last], rtol=0, atol=1e-5)
    # Parts that are absent leave the canvas as it was.
    for later in range(last + 1, 4):
      np.testing.assert_array_equal(cut[later], cut[last])
  # Every part that is told changes the picture (with perturbed, non-zero weights); an
  # example whose text ends earlier keeps its last canvas.
  hole = np.asarray(batch["mask"][..., 0]) > 0
  told = np.asarray(batch["segments"]).max(axis=1)
  assert sorted(told) == [1, 2, 2, 3]
  for part in range(1, 4):
    change = np.abs(whole[part] - whole[part - 1])[:, hole[0]].max(axis=(1, 2))
    assert (change[told >= part] > 1e-4).all() and (change[told < part] == 0).all()


def test_with_no_text_the_border_alone_is_completed(canvases_fn):
  canvases, state = canvases_fn
  batch = make_batch()  # Example 0 has no text at all.
  assert not np.asarray(batch["token_mask"][0]).any()
  whole = canvases(state, batch)
  hole = np.asarray(batch["mask"][0, ..., 0]) > 0
  assert np.abs(whole[0, 0][hole]).max() > 1e-3  # Painted, not the empty (zero) hole.
  for part in (1, 2, 3):
    np.testing.assert_array_equal(whole[part, 0], whole[0, 0])


def test_the_state_carries_an_earlier_turn_into_later_canvases(canvases_fn):
  canvases, state = canvases_fn
  batch = make_batch(empty_first_caption=False)
  whole = canvases(state, batch)
  # Another word in part 1 only: canvas 0 is unchanged, canvases 1-3 move.
  tokens = np.asarray(batch["tokens"]).copy()
  in_part_1 = np.asarray(batch["segments"]) == 1
  tokens[in_part_1] = (tokens[in_part_1] + 7) % 60 + 4
  moved = canvases(state, {**batch, "tokens": jnp.asarray(tokens)})
  np.testing.assert_allclose(moved[0], whole[0], rtol=0, atol=1e-6)
  hole = np.asarray(batch["mask"][..., 0]) > 0
  for part in (1, 2, 3):
    assert np.abs(moved[part] - whole[part])[:, hole[0]].max() > 1e-4


def test_encode_segments_numbers_the_parts_and_encode_reads_breaks_as_spaces(tmp_path):
  path = str(tmp_path / "tok.model")
  corpus = ["a small red star", "what is in the middle? a star", "which colour? red"] * 20
  tokenizer.train(corpus, path, 64)
  tok = tokenizer.Tokenizer(path)
  parts = ["a grey background", "what is in the middle? a star", "", "which colour? red"]
  text = tokenizer.PART_BREAK.join(parts)
  tokens, mask, segments = tok.encode_segments([text, "", text], 40)
  assert not mask[1].any() and (segments[1] == 0).all()
  np.testing.assert_array_equal(tokens[0], tokens[2])
  ids = tokens[0][mask[0]]
  numbers = segments[0][mask[0]]
  assert ids[0] == tokenizer.BOS_ID and ids[-1] == tokenizer.EOS_ID
  for number, part in enumerate(parts):
    alone = tok.encode([part], 40)[0][0]
    expected = alone[(alone != 0) & (alone != tokenizer.BOS_ID) & (alone != tokenizer.EOS_ID)]
    np.testing.assert_array_equal(ids[1:-1][numbers[1:-1] == number], expected)
  assert numbers[0] == 0 and numbers[-1] == 3 and np.all(np.diff(numbers) >= 0)
  # Cut short, the parts that fit keep their numbers.
  short, _, short_numbers = tok.encode_segments([text], 6)
  assert short[0, -1] == tokenizer.EOS_ID and short_numbers[0, -1] == short_numbers[0, -2]
  # `encode` reads the breaks as spaces: the same ids as the readable text.
  np.testing.assert_array_equal(
    tok.encode([text], 40)[0], tok.encode([batching.readable(text)], 40)[0]
  )
  assert (
    batching.readable(text) == "a grey background what is in the middle? a star which colour? red"
  )


def test_painter_refuses_a_single_caption_in_one_line():
  config = painter_config.get_config()
  config.data.text_source = "caption"
  with pytest.raises(UserError, match="the painter reads a conversation"):
    registry.for_config(config)
  config = painter_config.get_config()
  config.model.z_dim = -1
  with pytest.raises(UserError, match="z_dim must be >= 0"):
    registry.for_config(config)
  config = painter_config.get_config()
  config.model.z_dim = 4
  del config.model.encoder_widths
  with pytest.raises(UserError, match="needs model.encoder_widths"):
    registry.for_config(config)


def test_latent_painter_samples_are_rollouts_that_differ_in_the_hole():
  config, family, graphdef, state = built("painter")
  state = randomized(state)
  hp = family.hparams(config)
  batch = make_batch(empty_first_caption=False)
  size = batch["image"].shape[0]

  def run(s, b, rng):
    bundle = nnx.merge(graphdef, s)
    eps = jax.random.normal(rng, (2 * size, config.model.z_dim))
    tiled = jax.tree.map(lambda x: jnp.concatenate([x, x]), b)
    return family.sample(bundle, b, rng, 2, hp), painter.canvases(bundle, tiled, eps)

  samples, rollouts = (np.asarray(x) for x in fast_jit(run, state, batch, KEY)(state, batch, KEY))
  assert samples.shape == (2, size, 64, 64, 3)
  # Sample k is the last canvas of the rollout that reads noise k at every part.
  np.testing.assert_allclose(samples.reshape(rollouts[-1].shape), rollouts[-1], atol=1e-5)
  hole = np.asarray(batch["mask"][..., 0]) > 0
  image = np.asarray(batch["image"])
  for k in range(2):
    np.testing.assert_array_equal(samples[k][~hole], image[~hole])
  assert (np.abs(samples[0] - samples[1])[:, hole[0]].max(axis=(1, 2)) > 1e-4).all()


def tiny_run_config(data_dir: str):
  """configs/painter.py shrunk to train in seconds on `data_dir` (the smoke scenes)."""
  config = painter_config.get_config()
  config.data.dir = data_dir
  config.model.text = common.text_encoder("tiny")
  config.model.reader_width = 8
  config.model.widths = (8, 16, 16)
  config.model.encoder_widths = (8, 8, 8, 8)
  config.model.z_dim = 4
  config.model.attention_resolutions = (8,)
  config.model.attention_heads = 2
  config.global_batch_size = 8
  config.num_train_steps = 6
  config.optim.warmup_steps = 0
  config.log_every_steps = config.eval_every_steps = config.checkpoint_every_steps = 3
  config.num_eval_batches = 1
  config.num_grid_examples = config.num_grid_samples = 2
  return config


def test_painter_trains_through_the_trainer_and_is_evaluated_turn_by_turn(tmp_path, data_dir):
  config = tiny_run_config(data_dir)
  workdir = str(tmp_path / "painter_run")
  train.train_and_evaluate(config, workdir)
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["3", "6"]

  report = evaluate.run_evaluation(
    workdir,
    num_samples=2,
    max_examples=NUM_EXAMPLES,
    batch_size=NUM_EXAMPLES,
    fid="off",
    curve_examples=NUM_EXAMPLES,
  )
  modes = report["metrics"]["painter"]
  assert {"turn_0", "turn_1", "turn_2", "turn_3", "true"} <= set(modes)
  assert [entry["turn"] for entry in report["per_turn"]] == [0, 1, 2, 3]
  assert "consistency_to_next" in report["per_turn"][1]
  # Turn 3 reads every turn, as "true" does: the same completions.
  assert modes["turn_3"]["psnr_hole"]["mean"] == pytest.approx(modes["true"]["psnr_hole"]["mean"])
  # The run's own batches carry each token's part, numbered by turn.
  from inpainting import inference, input_pipeline  # noqa: PLC0415

  run = inference.load_run(workdir)
  ds = input_pipeline.create_dataset(
    data_dir, "validation", run.config.data, 4, seed=0, train=False, spec=run.family.batch
  )
  batch = next(iter(ds))
  assert batch["segments"].shape == batch["tokens"].shape
  assert set(np.unique(batch["segments"][batch["token_mask"]])) == {0, 1, 2, 3}

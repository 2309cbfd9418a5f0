"""evaluate's synthetic-scene metrics: the caption each example was given (shuffled), the
held-out wording condition, coverage and validity in metrics.json and report.md.

The end-to-end test evaluates an oracle "model" instead of a trained one: it reads the
caption from the tokens it is given, takes the first of the generator's centre phrases in
it that no border location follows as the centre object (what a model that only learnt the
generator's grammar would do) and draws that object in a random pose; with no such phrase
it draws K random objects. Every number it should get is computed here from what it was
given.
"""

import json
import os
import re
import shutil
import types

import numpy as np
import pytest
import sentencepiece as spm

from inpainting import batching, evaluate, images, inference, input_pipeline, records, scenes
from inpainting import run as run_layout
from inpainting.metrics import compliance, wording
from inpainting.tokenizer import EOS_ID, Tokenizer

NUM_EXAMPLES, BATCH, K = 12, 6, 3
CLASSES = [(s, c, z) for s in scenes.SHAPES for c in scenes.COLORS for z in scenes.SIZES]
_ALTERNATIVES = {
  "size": "|".join(scenes.SIZES),
  "color": "|".join(scenes.COLORS),
  "shape": "|".join(scenes.SHAPES),
}
# The generator's centre phrases, and the border objects' locations (`scenes._location`).
PHRASES = [
  re.compile(r"\b" + form.format(**{k: f"(?P<{k}>{v})" for k, v in _ALTERNATIVES.items()}) + r"\b")
  for form in scenes.CENTER_FORMS
]
BORDER_PLACE = re.compile(
  r" (in the (top|bottom) (left|right) corner|at the (top|bottom)|on the \w+)"
)


def generator_reading(text: str) -> tuple[str, str, str] | None:
  """(shape, colour, size) of the first centre phrase in `text` that no border location
  follows: how the generator's grammar marks the centre object. None if there is none."""
  found = sorted((m.start(), m) for p in PHRASES for m in p.finditer(text))
  for _, match in found:
    if not BORDER_PLACE.match(text, match.end()):
      return match["shape"], match["color"], match["size"]
  return None


def _center(scene):
  center = scene["objects"][0]
  return (center["shape"], center["color"], center["size"])


def _pipeline_batch(data_dir, smoke_config, caption_mode, size=8):
  config = smoke_config(**{"data.dir": data_dir})
  dataset = input_pipeline.create_dataset(
    data_dir, "validation", config.data, size, seed=0, train=False, caption_mode=caption_mode
  )
  return next(iter(dataset))


# --- Which caption was given ----------------------------------------------------------------


def test_given_scenes_are_the_scenes_whose_captions_were_given(data_dir, smoke_config):
  batch = _pipeline_batch(data_dir, smoke_config, "shuffled")
  given = evaluate.given_scenes(batch)
  # Independently of the pipeline's code: each record's own captions, from the shards.
  reader = input_pipeline.RecordReader(records.shard_paths(data_dir, "validation"))
  own = [records.decode(r) for r in reader.read_batch(batch["index"])]

  def key(scene):
    return json.dumps(scene, sort_keys=True)

  captions_of = {key(e.scene): e.captions for e in own}
  for i, example in enumerate(own):
    given_scene = json.loads(given[i])
    assert given_scene != example.scene  # Another example's caption...
    assert batch["caption"][i] not in example.captions
    assert batch["caption"][i] in captions_of[key(given_scene)]  # ...and that example's scene.


def test_given_scenes_refuse_another_pairing(data_dir, smoke_config):
  batch = _pipeline_batch(data_dir, smoke_config, "shuffled")
  other = {**batch, "caption": np.roll(batch["caption"], -2)}  # Not i - 1's captions.
  with pytest.raises(ValueError, match="does not name the centre object"):
    evaluate.given_scenes(other)


def test_synthetic_metrics_use_the_given_scene(data_dir, smoke_config):
  batch = _pipeline_batch(data_dir, smoke_config, "shuffled")
  given = evaluate.given_scenes(batch)
  # Each example drawn with the given caption's centre object at the hidden pose.
  samples = images.to_float(
    np.stack(
      [
        scenes.render(scenes.with_center(json.loads(own), *_center(json.loads(donor))))
        for own, donor in zip(batch["scene"], given)
      ]
    )
  )[None]
  found = evaluate.synthetic_metrics(samples, {**batch, "given_scene": given})
  np.testing.assert_array_equal(found["obeys_caption_all"], 1.0)
  same = [_center(json.loads(a)) == _center(json.loads(b)) for a, b in zip(batch["scene"], given)]
  np.testing.assert_array_equal(found["compliance_all"], same)
  assert "obeys_caption_all" not in evaluate.synthetic_metrics(samples, batch)
  photos = {**batch, "scene": np.array([""] * len(batch["scene"]))}
  assert evaluate.synthetic_metrics(samples, photos) == {}


# --- The whole evaluation, of an oracle -------------------------------------------------------


class OracleRun:
  """Quacks like inference.Run; records what it was given (decoded tokens, scenes, index)."""

  name = "oracle"
  step = 1

  def __init__(self, workdir, config):
    self.workdir, self.config = workdir, config
    self.family = types.SimpleNamespace(batch=batching.DEFAULT_SPEC)
    self._text = spm.SentencePieceProcessor(model_file=run_layout.tokenizer_path(workdir))
    self.given: list[tuple[str, str, int]] = []

  @staticmethod
  def drawn(text: str, index: int) -> list[tuple[str, str, str]]:
    """The K classes it draws for example `index` given caption `text`."""
    read = generator_reading(text)
    if read:
      return [read] * K
    rng = np.random.default_rng([index, 99])
    return [CLASSES[i] for i in rng.integers(0, len(CLASSES), K)]

  def sample(self, batch, num_samples, seed):
    assert num_samples in (1, K)
    out = []
    for tokens, scene, index in zip(batch["tokens"], batch["scene"], batch["index"]):
      text = self._text.decode([int(t) for t in tokens if t > EOS_ID])
      self.given.append((text, scene, int(index)))
      rng = np.random.default_rng([int(index), seed])
      out.append(
        [
          scenes.render(scenes.with_center(compliance.reposed(json.loads(scene), rng), *klass))
          for klass in self.drawn(text, int(index))[:num_samples]
        ]
      )
    return images.to_float(np.stack(out).swapaxes(0, 1))  # [K, B, 64, 64, 3]

  def visualize(self, batch, samples):
    return None


@pytest.fixture(scope="module")
def oracle_evaluation(tmp_path_factory, data_dir, smoke_config):
  workdir = str(tmp_path_factory.mktemp("oracle"))
  shutil.copyfile(
    os.path.join(data_dir, records.TOKENIZER_FILE), run_layout.tokenizer_path(workdir)
  )
  oracle = OracleRun(workdir, smoke_config(**{"data.dir": data_dir}))
  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(inference, "load_run", lambda *args, **kwargs: oracle)
    patch.setattr(inference, "checkpoint_steps", lambda workdir: [oracle.step])
    report = evaluate.run_evaluation(
      workdir,
      num_samples=K,
      max_examples=NUM_EXAMPLES,
      batch_size=BATCH,
      fid="off",
      curve_examples=BATCH,
      heldout_wording=True,
    )
  with open(os.path.join(workdir, "eval", "validation", "report.md"), encoding="utf-8") as f:
    text = f.read()
  return oracle, report, text


def _given_in(oracle, condition_start, count=NUM_EXAMPLES):
  return oracle.given[condition_start : condition_start + count]


def _agreement(given, against):
  """Per attribute and all: how often the first class drawn agrees with `against` (a class
  per example)."""
  hits = {name: [] for name in (*compliance.ATTRIBUTES, "all")}
  for (text, _, index), wanted in zip(given, against):
    drawn = dict(zip(("shape", "color", "size"), OracleRun.drawn(text, index)[0]))
    want = dict(zip(("shape", "color", "size"), wanted))
    for name in compliance.ATTRIBUTES:
      hits[name].append(drawn[name] == want[name])
    hits["all"].append(drawn == want)
  return {name: float(np.mean(v)) for name, v in hits.items()}


def test_oracle_metrics_in_every_condition(oracle_evaluation):
  oracle, report, _ = oracle_evaluation
  metrics = report["metrics"]["oracle"]
  assert list(metrics) == ["true", "shuffled", "empty", "reworded"]
  # The order in which the oracle was called: true, shuffled, empty, reworded, then the
  # metric-vs-step curve (true captions, one sample).
  calls = {c: _given_in(oracle, i * NUM_EXAMPLES) for i, c in enumerate(metrics)}
  scenes_of = {c: [json.loads(s) for _, s, _ in g] for c, g in calls.items()}
  for condition, given in calls.items():
    assert [i for *_, i in given] == list(range(NUM_EXAMPLES)), condition

  def mean(condition, name):
    return metrics[condition][name]["mean"]

  # True captions: the oracle reads the generator's grammar, so it complies.
  assert mean("true", "compliance_all") == 1.0
  assert mean("true", "coverage_distinct_k") == 1.0
  # Shuffled: it obeys the caption it was given; against its own scene, the agreement rate.
  assert mean("shuffled", "obeys_caption_all") == 1.0
  expected = _agreement(calls["shuffled"], [_center(s) for s in scenes_of["shuffled"]])
  for name, value in expected.items():
    assert mean("shuffled", f"compliance_{name}") == pytest.approx(value), name
  assert expected["color"] < 1.0
  assert "obeys_caption_all" not in metrics["true"] and "obeys_caption_all" not in metrics["empty"]
  # No caption: K random objects; coverage is the number of distinct ones.
  distinct = [len(set(OracleRun.drawn("", i))) for i in range(NUM_EXAMPLES)]
  assert all(text == "" for text, *_ in calls["empty"])
  assert mean("empty", "coverage_distinct_k") == pytest.approx(np.mean(distinct))
  assert np.mean(distinct) > 1.0
  # Every sample of every condition is a clean object in some pose.
  for condition in metrics:
    assert mean(condition, "valid_object_rate") == 1.0, condition


def test_reworded_captions_reach_the_model_and_are_scored(oracle_evaluation):
  oracle, report, text = oracle_evaluation
  metrics = report["metrics"]["oracle"]
  given = _given_in(oracle, 3 * NUM_EXAMPLES)
  length = oracle.config.data.max_caption_length
  tokenizer = Tokenizer(run_layout.tokenizer_path(oracle.workdir))
  for seen, scene, index in given:
    # The run's tokens of the held-out caption (the context after the centre may be cut).
    held_out = wording.fitting_caption(json.loads(scene), index, tokenizer, length)
    assert seen and held_out.startswith(seen), (seen, held_out)
    assert not compliance.describes_center(seen, json.loads(scene)) or generator_reading(seen)
  expected = _agreement(given, [_center(json.loads(s)) for _, s, _ in given])
  for name, value in expected.items():
    assert metrics["reworded"][f"compliance_{name}"]["mean"] == pytest.approx(value), name
  # A reader of the generator's word order is not robust to the held-out wordings.
  assert 0.0 < expected["all"] < 1.0
  effect = report["caption_effect"]["oracle"]["true_minus_reworded/compliance_all"]
  assert effect["mean"] == pytest.approx(1.0 - expected["all"])
  assert "## With held-out wording of the true caption (reworded)" in text


def test_fills_are_invalid_and_the_report_explains_the_columns(oracle_evaluation):
  _, report, text = oracle_evaluation
  for name in ("baseline_mean_fill", "baseline_harmonic_fill"):
    assert report["metrics"][name]["true"]["valid_object_rate"]["mean"] == 0.0, name
  assert report["valid_rms_threshold"] == compliance.VALID_RMS_THRESHOLD
  for label in ("valid objects", "distinct classes in K", "given caption, all three ✓"):
    assert label in text, label
  assert f"RMS {compliance.VALID_RMS_THRESHOLD}" in text
  saved_path = os.path.join(report["workdir"], "eval", "validation", "metrics.json")
  with open(saved_path, encoding="utf-8") as f:
    saved = json.load(f)
  assert saved["metrics"]["oracle"]["shuffled"]["obeys_caption_all"]["mean"] == 1.0

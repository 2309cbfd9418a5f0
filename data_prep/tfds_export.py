"""TFDS metadata for a prepared folder, so that TFDS's own reader opens it.

The shards are `tf.train.Example` records (see inpainting/records.py) named the way TFDS
names shards, `{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}`. `write_metadata` adds what
`tfds.builder_from_directory` reads: dataset_info.json (file format, and per split the
file name template and the number of records in each shard) and features.json (the
feature connectors below). Then

    builder = tfds.builder_from_directory(folder)
    data = builder.as_data_source("train")   # ArrayRecord random access, no TensorFlow
    data[0]  # {"image": uint8 [64, 64, 3], "captions": [bytes, ...], "id": bytes, "scene": bytes,
             #  "context_caption": bytes, "dialogue": bytes}

TFDS returns text as UTF-8 bytes; `scene` is the synthetic scene's JSON, b"" for photos;
`context_caption` is b"" where there is none; `dialogue` is a JSON list of turns
{"question", "answer", "reveals"}, b"" where there is none. Folders of format version 2
(written before the last two features existed) carry their own features.json, without them.
The image is a raw uint8 tensor (TFDS `Tensor` with bytes encoding), not a PNG-encoded
`Image` feature: decoding a PNG per example would cost more than the rest of the training
pipeline's per-example work. Records also hold a `_header` feature, our reader's fast
path, which TFDS ignores (it is not in features.json).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from inpainting import records

DATASET_NAME = "inpainting"


def features() -> Any:
  """The `tfds.features.FeaturesDict` of a record."""
  import tensorflow_datasets as tfds  # noqa: PLC0415  (slow import, needed once per folder)

  return tfds.features.FeaturesDict(
    {
      "image": tfds.features.Tensor(
        shape=records.IMAGE_SHAPE, dtype=np.uint8, encoding=tfds.features.Encoding.BYTES
      ),
      "captions": tfds.features.Sequence(tfds.features.Text()),
      "id": tfds.features.Text(),
      "scene": tfds.features.Text(),
      "context_caption": tfds.features.Text(),
      "dialogue": tfds.features.Text(),  # JSON, like scene.
    }
  )


def write_metadata(
  folder: str, shard_lengths: Mapping[str, Sequence[int]], description: str = ""
) -> None:
  """Writes dataset_info.json and features.json into a folder of shards.

  Args:
    folder: holds the shards of every split in `shard_lengths`, named by
      `records.shard_name`.
    shard_lengths: per split, the number of records in each of its shards, in shard order.
    description: shown by TFDS (`builder.info.description`).
  """
  import tensorflow_datasets as tfds  # noqa: PLC0415

  template = tfds.core.ShardedFileTemplate(
    data_dir=folder,
    template=records.TFDS_FILE_TEMPLATE,
    dataset_name=DATASET_NAME,
    filetype_suffix=records.TFDS_FILE_FORMAT,
  )
  split_infos = []
  for split, lengths in shard_lengths.items():
    paths = [
      os.path.join(folder, records.shard_name(split, i, len(lengths))) for i in range(len(lengths))
    ]
    split_infos.append(
      tfds.core.SplitInfo(
        name=split,
        shard_lengths=[int(n) for n in lengths],
        num_bytes=sum(os.path.getsize(path) for path in paths),
        filename_template=template.replace(split=split),
      )
    )
  tfds.folder_dataset.write_metadata(
    data_dir=folder,
    features=features(),
    split_infos=split_infos,
    version=f"{records.FORMAT_VERSION}.0.0",
    filename_template=template,
    check_data=False,  # Its check reads through tf.data, i.e. needs TensorFlow.
    description=description,
  )

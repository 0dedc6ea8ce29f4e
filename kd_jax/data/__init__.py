"""Input pipelines: datasets as random-access splits, batches as pure functions of (seed, step), augmentation in JAX.

`load_dataset` / `from_arrays` (and `from_ratings` / `load_rating_dataset`, `load_sr_dataset`, `load_regression_dataset` /
`from_regression_arrays` for the other tasks) give a `Dataset` of train / val / test `Split`s (val carved from training
data); `train_batch` and `eval_batches` cut batches from a split; `augment` is applied inside the jitted
train step. See `datasets.py` and `pipeline.py` for the determinism guarantees. `streaming.py` streams tfds JPEG
datasets too large for memory (ImageNet), decoded and augmented on the host by grain workers.
"""

from kd_jax.data.augment import augment, augment_jointly, cutmix, cutout, mixup, partner_within
from kd_jax.data.datasets import DATASETS
from kd_jax.data.datasets import ArraySplit
from kd_jax.data.datasets import Dataset
from kd_jax.data.datasets import DatasetSpec
from kd_jax.data.datasets import Split
from kd_jax.data.datasets import dataset_names
from kd_jax.data.datasets import from_arrays
from kd_jax.data.datasets import from_ratings
from kd_jax.data.datasets import load_dataset
from kd_jax.data.ratings import (RATING_DATASETS, load_movielens, load_rating_dataset, rated_matrix,
                                 synthetic_rating_matrix, synthetic_ratings)
from kd_jax.data.regression import (REGRESSION_DATASETS, from_regression_arrays, load_regression_dataset,
                                    trajectory_arrays)
from kd_jax.data.segmentation import (SEGMENTATION_DATASETS, buildings_arrays, from_segmentation_arrays,
                                      load_segmentation_dataset, read_segmentation_folders)
from kd_jax.data.super_resolution import PairedImages, PatchPairs, SR_DATASETS, from_folders, load_sr_dataset
from kd_jax.data.pipeline import batch_indices
from kd_jax.data.pipeline import eval_batches
from kd_jax.data.pipeline import steps_per_epoch
from kd_jax.data.pipeline import train_batch
from kd_jax.data.streaming import StreamingSplit

__all__ = [
    "ArraySplit", "DATASETS", "Dataset", "augment_jointly", "from_ratings", "DatasetSpec", "Split", "augment", "cutmix", "cutout", "mixup", "partner_within", "batch_indices", "dataset_names", "eval_batches",
    "from_arrays", "load_dataset", "steps_per_epoch", "train_batch", "PairedImages", "PatchPairs", "SR_DATASETS",
    "from_folders", "load_sr_dataset", "REGRESSION_DATASETS", "from_regression_arrays", "load_regression_dataset",
    "trajectory_arrays", "RATING_DATASETS", "load_movielens", "load_rating_dataset", "rated_matrix",
    "synthetic_rating_matrix", "synthetic_ratings",
]
__all__ += ["StreamingSplit"]
__all__ += ["SEGMENTATION_DATASETS", "buildings_arrays", "from_segmentation_arrays", "load_segmentation_dataset",
            "read_segmentation_folders"]

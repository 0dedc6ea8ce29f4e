"""Rating datasets (task 'rating'): the embedded synthetic `synthetic_ratings` and MovieLens from a folder.

Both become a `Dataset` through `kd_jax.data.from_ratings`: batches `{'user', 'item', 'rating', 'index'}`, a
fixed test split (10% of the ratings, drawn with seed 0 whatever the run seed, so every run reports on the same
ratings) and a validation split of `val_fraction` of the rest drawn from the run seed. Student and teacher runs
with the same `config.seed` therefore train on the same ratings.

`synthetic_ratings` (`synthetic_rating_matrix`; every number is our choice [assume]): 600 users × 400 items with
seeded rank-8 preferences. A user's affinity for an item is `s = 3.3 + b_u + b_i + 0.9·p_u·q_i` (p_u ~ N(0, I/8),
q_i ~ N(0, I), biases ~ N(0, 0.4²)), and the rating they would give is `clip(round(s + ε), 1, 5)` with
ε ~ N(0, 0.5²): the full matrix of ratings exists, as in a simulation. What is observed is missing not at
random, as real explicit feedback is: user u rates n_u items (log-normal around 20, at least 5, so ~5% of the
matrix), drawn without replacement with probability ∝ popularity_i^0.8 · exp(1.0·(s − 3.3)): items are
popular by a Zipf law over a random item order, and users rate the items they like more often. So the observed
ratings are higher on average than the full matrix's, and popular items dominate the data. The generator's seed
is fixed (`SYNTHETIC_SEED`), never the run's.

`movielens`: `config.data.data_dir` holding either `u.data` (MovieLens 100K: tab-separated `user item rating
timestamp`, no header) or `ratings.csv` (MovieLens latest / 25M: comma-separated with the header
`userId,movieId,rating,timestamp`, half-star ratings). Ids are re-indexed densely in increasing order of the
file's ids. Nothing is downloaded: get the files from https://grouplens.org/datasets/movielens/.
"""

from __future__ import annotations

import os
from typing import Optional, Tuple

import numpy as np

from kd_jax.data.datasets import Dataset, from_ratings
from kd_jax.errors import KDJaxError, one_of

RATING_DATASETS = ("synthetic_ratings", "movielens")

SYNTHETIC_SEED = 2025
SYNTHETIC_USERS = 600
SYNTHETIC_ITEMS = 400
SYNTHETIC_RANK = 8
SYNTHETIC_RATINGS_PER_USER = 20.0  # the mean of n_u: 5% of 400 items

MOVIELENS_FILES = ("u.data", "ratings.csv")


def synthetic_rating_matrix(num_users: int = SYNTHETIC_USERS, num_items: int = SYNTHETIC_ITEMS,
                            rank: int = SYNTHETIC_RANK, ratings_per_user: float = SYNTHETIC_RATINGS_PER_USER,
                            seed: int = SYNTHETIC_SEED) -> Tuple[np.ndarray, np.ndarray]:
  """`(full, observed)`: every user's rating of every item [U, I] (float32 in 1..5) and which of them the data
  holds [U, I] bool (see the module docstring). Deterministic in the arguments."""
  rng = np.random.default_rng(seed)
  p = rng.normal(size=(num_users, rank)) / np.sqrt(rank)
  q = rng.normal(size=(num_items, rank))
  b_u, b_i = 0.4 * rng.normal(size=num_users), 0.4 * rng.normal(size=num_items)
  affinity = 3.3 + b_u[:, None] + b_i[None, :] + 0.9 * (p @ q.T)
  full = np.clip(np.round(affinity + 0.5 * rng.normal(size=affinity.shape)), 1.0, 5.0).astype(np.float32)
  popularity_rank = rng.permutation(num_items) + 1.0  # Zipf: item with popularity rank r is seen ∝ r^-0.8
  propensity = -0.8 * np.log(popularity_rank)[None, :] + 1.0 * (affinity - 3.3)
  counts = np.exp(np.log(ratings_per_user) - 0.125 + 0.5 * rng.normal(size=num_users))  # log-normal, mean ~20
  counts = np.clip(np.round(counts), 5, num_items // 2).astype(int)
  # n_u items without replacement, ∝ exp(propensity): the n_u largest of propensity + Gumbel noise.
  keys = propensity + rng.gumbel(size=propensity.shape)
  order = np.argsort(-keys, axis=1)
  observed = np.zeros((num_users, num_items), bool)
  for u in range(num_users):
    observed[u, order[u, :counts[u]]] = True
  return full, observed


def synthetic_ratings() -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
  """The observed `(users, items, ratings)` of `synthetic_rating_matrix()`, user-major."""
  full, observed = synthetic_rating_matrix()
  users, items = np.nonzero(observed)
  return users.astype(np.int64), items.astype(np.int64), full[users, items]


def load_movielens(data_dir: str) -> Tuple[np.ndarray, np.ndarray, np.ndarray, str]:
  """`(users, items, ratings, name)` from `data_dir/u.data` or `data_dir/ratings.csv`, ids re-indexed densely.

  Raises:
    KDJaxError: no data_dir, neither file in it, a malformed file, non-integer ids, non-finite ratings.
  """
  where = ("Put MovieLens 100K's u.data (tab-separated: user id, item id, rating, timestamp) or MovieLens "
           "latest's ratings.csv (header userId,movieId,rating,timestamp) in a folder and set "
           "config.data.data_dir to it (files from https://grouplens.org/datasets/movielens/; nothing is "
           "downloaded).")
  if not data_dir:
    raise KDJaxError(f"config.data.name='movielens' reads config.data.data_dir, which is empty. {where}")
  paths = [os.path.join(data_dir, f) for f in MOVIELENS_FILES]
  path = next((p for p in paths if os.path.isfile(p)), None)
  if path is None:
    raise KDJaxError(f"config.data.data_dir={data_dir!r} holds neither u.data nor ratings.csv. {where}")
  csv = path.endswith(".csv")
  if csv:
    with open(path) as f:
      header = f.readline().strip().split(",")
    if header[:3] != ["userId", "movieId", "rating"]:
      raise KDJaxError(f"{path} must start with the header userId,movieId,rating,timestamp (MovieLens latest); "
                       f"its first line is {','.join(header)!r}.")
  try:
    table = np.loadtxt(path, delimiter="," if csv else "\t", skiprows=1 if csv else 0, usecols=(0, 1, 2),
                       dtype=np.float64, ndmin=2)
  except ValueError as e:
    layout = "userId,movieId,rating,timestamp" if csv else "user<TAB>item<TAB>rating<TAB>timestamp"
    raise KDJaxError(f"{path} is not a MovieLens ratings file ({layout} per line): {e}") from e
  if len(table) == 0:
    raise KDJaxError(f"{path} holds no ratings.")
  raw_users, raw_items, ratings = table[:, 0], table[:, 1], table[:, 2]
  for ids, what in ((raw_users, "user"), (raw_items, "item")):
    bad = ~np.isfinite(ids) | (ids != np.round(ids))
    if bad.any():
      line = int(np.argmax(bad)) + 1 + int(csv)
      raise KDJaxError(f"{path}, line {line}: {what} ids must be integers, got {ids[bad][0]!r}.")
  if not np.all(np.isfinite(ratings)):
    line = int(np.argmax(~np.isfinite(ratings))) + 1 + int(csv)
    raise KDJaxError(f"{path}, line {line}: ratings must be finite numbers.")
  _, users = np.unique(raw_users.astype(np.int64), return_inverse=True)
  _, items = np.unique(raw_items.astype(np.int64), return_inverse=True)
  name = "movielens-100k" if not csv else "movielens"
  return users.astype(np.int64), items.astype(np.int64), ratings.astype(np.float32), name


def load_rating_dataset(name: str, *, data_dir: str = "", val_fraction: float = 0.1, seed: int = 0,
                        test_fraction: float = 0.1) -> Dataset:
  """The rating dataset `name` (config.data.name with config.task='rating'); see the module docstring."""
  if name == "synthetic_ratings":
    users, items, ratings = synthetic_ratings()
    return from_ratings(users, items, ratings, num_users=SYNTHETIC_USERS, num_items=SYNTHETIC_ITEMS,
                        test_fraction=test_fraction, val_fraction=val_fraction, seed=seed, name=name)
  if name == "movielens":
    users, items, ratings, full_name = load_movielens(data_dir)
    return from_ratings(users, items, ratings, test_fraction=test_fraction, val_fraction=val_fraction, seed=seed,
                        name=full_name)
  raise KDJaxError(f"Unknown rating dataset {name!r}; config.task='rating' takes config.data.name "
                   f"{one_of(RATING_DATASETS)} (or pass your own triples through kd_jax.data.from_ratings).")


def rated_matrix(dataset: Dataset, split: Optional[str] = "train") -> np.ndarray:
  """[num_users, num_items] bool: which (user, item) pairs `dataset`'s `split` rates (the training split by
  default: what a distiller may know about which items a user has rated)."""
  arrays = getattr(dataset, split).arrays
  rated = np.zeros((dataset.info["num_users"], dataset.info["num_items"]), bool)
  rated[arrays["user"], arrays["item"]] = True
  return rated

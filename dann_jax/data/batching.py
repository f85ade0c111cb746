"""Batches for domain-adversarial training: half labelled source, half unlabelled target, reshuffled every epoch.

`make_domain_pair` puts both training sets on the device once, with the per-channel mean of their pixels (the paper's
only preprocessing). `sample_batch(pair, key, step, batch_size)` is pure and jittable, so a `lax.scan` over steps
runs without Python in the loop.

Shuffling: each domain is visited without replacement within an epoch (the remainder of an epoch that does not fill
a half batch is dropped), with a fresh order every epoch. Drawing `jax.random.permutation` of 60,000 indices inside
the step costs about 30 ms per step on a 2-core CPU (a sort), so the order is instead a keyed bijection of
[0, N): a 6-round Feistel network over the smallest power of four >= N, with cycle walking to stay inside [0, N)
(Black & Rogaway 2002). Its round keys come from `fold_in(fold_in(key, domain), epoch)`; a batch then costs O(B)
integer hashing, whatever N.

References: Ganin & Lempitsky, arXiv 1409.7495, Sec. 5 (batches of 128 = 64 source + 64 target, mean subtraction);
Black & Rogaway, "Ciphers with arbitrary finite domains", CT-RSA 2002 (cycle walking).
"""

from __future__ import annotations

from typing import Any, Iterator, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

SOURCE, TARGET = 0, 1
_FEISTEL_ROUNDS = 6


class DomainPair(NamedTuple):
  """Both training sets on the device (a pytree; build with `make_domain_pair`).

  Attributes:
    source_images: (Ns,32,32,3) uint8.
    source_labels: (Ns,) int32.
    target_images: (Nt,32,32,3) uint8.
    target_labels: (Nt,) int32, used only by 'target_only' training and for monitoring.
    target_label_known: (Nt,) bool, True where a target label may be trained on (semi-supervised variant); None
      when none may be (unsupervised adaptation), which the training loop can see without looking at values.
    mean: (3,) float32 per-channel mean of all source and target training pixels, in [0, 1] units.
  """

  source_images: jax.Array
  source_labels: jax.Array
  target_images: jax.Array
  target_labels: jax.Array
  target_label_known: jax.Array | None
  mean: jax.Array


def _arrays(data: Any) -> tuple[np.ndarray, np.ndarray]:
  if isinstance(data, (tuple, list)):
    images, labels = data
  else:
    images, labels = data.images, data.labels
  return np.asarray(images), np.asarray(labels)


def as_uint8_images(images: Any, name: str = "images") -> np.ndarray:
  """Images as uint8 in [0, 255], converting float and wider integer images explicitly.

  uint8 passes unchanged. Integer images must already lie in [0, 255]. Float images must be finite; if every value
  lies in [0, 1] they are read as [0, 1] intensities and become `round(255 * x)`, otherwise every value must lie in
  [0, 255] and becomes `round(x)`.

  Args:
    images: an array of images.
    name: the argument's name, for errors.

  Raises:
    TypeError: for images that are not numbers (e.g. bool or object arrays).
    ValueError: for NaN/inf pixels or values outside [0, 1] / [0, 255].
  """
  images = np.asarray(images)
  if images.dtype == np.uint8:
    return images
  if np.issubdtype(images.dtype, np.floating):
    finite = np.isfinite(images)
    if not finite.all():
      raise ValueError(
        f"{name} hold {int(images.size - finite.sum())} NaN or infinite pixels; clean or drop those images first"
      )
    lo, hi = (float(images.min()), float(images.max())) if images.size else (0.0, 0.0)
    if lo >= 0.0 and hi <= 1.0:
      return np.rint(images * 255.0).astype(np.uint8)
    if lo >= 0.0 and hi <= 255.0:
      return np.rint(images).astype(np.uint8)
    raise ValueError(f"{name} are floats in [{lo:g}, {hi:g}]; give uint8 images, or floats in [0, 1] or [0, 255]")
  if np.issubdtype(images.dtype, np.integer) and images.dtype != np.bool_:
    lo, hi = (int(images.min()), int(images.max())) if images.size else (0, 0)
    if lo < 0 or hi > 255:
      raise ValueError(f"{name} ({images.dtype}) hold values in [{lo}, {hi}]; pixel values must lie in [0, 255]")
    return images.astype(np.uint8)
  raise TypeError(f"{name} have dtype {images.dtype}; give uint8 images (or floats in [0, 1] or [0, 255])")


def _as_labels(labels: np.ndarray, name: str) -> np.ndarray:
  if not (
    np.issubdtype(labels.dtype, np.integer)
    or (np.issubdtype(labels.dtype, np.floating) and np.all(np.isfinite(labels)) and np.all(labels == np.round(labels)))
  ):
    raise TypeError(f"{name} have dtype {labels.dtype} and are not whole numbers; give integer class indices")
  if labels.ndim != 1:
    raise ValueError(f"{name} have shape {labels.shape}; need one class index per image, shape (N,)")
  return labels.astype(np.int64)


def pixel_mean(*image_sets: np.ndarray) -> np.ndarray:
  """Per-channel mean of all pixels of all image sets (pooled, each image weighs the same), in [0, 1] units."""
  total = sum(np.sum(images, axis=tuple(range(images.ndim - 1)), dtype=np.uint64) for images in image_sets)
  count = sum(int(np.prod(images.shape[:-1])) for images in image_sets)
  return (total.astype(np.float64) / count / 255.0).astype(np.float32)


def make_domain_pair(source: Any, target: Any, *, target_label_known: Any = None) -> DomainPair:
  """Puts source and target training data on the device, with their pooled pixel mean.

  Args:
    source: a `Domain` (or an (images, labels) pair) of labelled source training data.
    target: the same for the target; its labels are used only where `target_label_known` is True, by the
      'target_only' method, and for monitoring.
    target_label_known: (Nt,) bool; None or all False (the default): unsupervised adaptation.

  Images may be uint8, or floats converted as `as_uint8_images` says (values in [0, 1] are scaled by 255).

  Raises:
    ValueError: images of different shape, an empty domain, mismatched lengths, NaN/inf pixels, pixel values out of
      range, or negative source labels.
    TypeError: images or labels that are not numbers.
  """
  source_images, source_labels = _arrays(source)
  target_images, target_labels = _arrays(target)
  for role, images, labels in (("source", source_images, source_labels), ("target", target_images, target_labels)):
    if images.ndim != 4 or len(images) == 0:
      raise ValueError(f"{role} images have shape {images.shape}; need (N, H, W, C) with N > 0 samples")
    if len(labels) != len(images):
      raise ValueError(f"{role} has {len(images)} images but {len(labels)} labels; they must match")
  source_images = as_uint8_images(source_images, "source images")
  target_images = as_uint8_images(target_images, "target images")
  source_labels = _as_labels(source_labels, "source labels")
  target_labels = _as_labels(target_labels, "target labels")
  if source_labels.min() < 0:
    raise ValueError(f"source labels hold {source_labels.min()}; every source image needs a class index >= 0")
  if source_images.shape[1:] != target_images.shape[1:]:
    raise ValueError(
      f"source images {source_images.shape[1:]} and target images {target_images.shape[1:]} differ "
      "in shape; bring both to (32, 32, 3)"
    )
  if target_label_known is not None:
    target_label_known = np.asarray(target_label_known, bool)
    if target_label_known.shape != target_labels.shape:
      raise ValueError(f"target_label_known has shape {target_label_known.shape}, need {target_labels.shape}")
    if not target_label_known.any():
      target_label_known = None
  return DomainPair(
    source_images=jnp.asarray(source_images, jnp.uint8),
    source_labels=jnp.asarray(source_labels, jnp.int32),
    target_images=jnp.asarray(target_images, jnp.uint8),
    target_labels=jnp.asarray(target_labels, jnp.int32),
    target_label_known=None if target_label_known is None else jnp.asarray(target_label_known),
    mean=jnp.asarray(pixel_mean(source_images, target_images)),
  )


def preprocess(images: Any, mean: Any) -> jax.Array:
  """uint8 images -> float32 `images / 255 - mean` (per channel), as in training."""
  return jnp.asarray(images, jnp.float32) / 255.0 - jnp.asarray(mean, jnp.float32)


def _mix32(x: jax.Array) -> jax.Array:
  """A uint32 avalanche hash (the murmur3 finaliser)."""
  x = x ^ (x >> 16)
  x = x * jnp.uint32(0x85EBCA6B)
  x = x ^ (x >> 13)
  x = x * jnp.uint32(0xC2B2AE35)
  return x ^ (x >> 16)


def shuffled_index(key: jax.Array, positions: jax.Array, n: int) -> jax.Array:
  """A keyed bijection of [0, n) applied to `positions` (each < n): the epoch order for that key.

  Args:
    key: a PRNG key; one key, one order.
    positions: int array of positions in the epoch, each in [0, n).
    n: the domain size (static).

  Returns:
    int32 indices, distinct for distinct positions.
  """
  half_bits = max(1, (max(n - 1, 1).bit_length() + 1) // 2)
  low_mask = jnp.uint32((1 << half_bits) - 1)
  round_keys = jax.random.bits(key, (_FEISTEL_ROUNDS,), jnp.uint32)

  def feistel(x):
    left, right = x >> half_bits, x & low_mask
    for r in range(_FEISTEL_ROUNDS):
      left, right = right, left ^ (_mix32(right ^ round_keys[r]) & low_mask)
    return (left << half_bits) | right

  # Cycle walking: re-encrypt values that land outside [0, n) until they come back inside; the domain is < 4n,
  # so a handful of rounds suffice on average, and it terminates because the cycle through a value < n returns.
  first = feistel(positions.astype(jnp.uint32))
  index = jax.lax.while_loop(lambda y: jnp.any(y >= n), lambda y: jnp.where(y >= n, feistel(y), y), first)
  return index.astype(jnp.int32)


def epoch_indices(key: jax.Array, step: jax.Array, n: int, count: int) -> jax.Array:
  """Indices of the `count` samples that `step` draws from a domain of `n`, without replacement per epoch."""
  steps_per_epoch = n // count
  step = jnp.asarray(step, jnp.int32)
  epoch, position = step // steps_per_epoch, step % steps_per_epoch
  positions = position * count + jnp.arange(count, dtype=jnp.int32)
  return shuffled_index(jax.random.fold_in(key, epoch), positions, n)


def half_batch(batch_size: int) -> int:
  """The rows of each domain in a batch of `batch_size`: half source, half target.

  The one check of a batch size, used wherever one enters the library (`TrainConfig`, `fit`, the multi-device
  runners, `sample_batch`).

  Raises:
    ValueError: unless `batch_size` is a positive even integer.
  """
  if int(batch_size) != batch_size or batch_size <= 0 or batch_size % 2:
    raise ValueError(f"{batch_size=} must be even and positive: half source, half target")
  return int(batch_size) // 2


def sample_batch(
  pair: DomainPair, key: jax.Array, step: jax.Array, batch_size: int, rows: str = "both"
) -> dict[str, jax.Array]:
  """The training batch of `step`: first half source, second half target. Pure; jit with batch_size static.

  Args:
    pair: from `make_domain_pair`.
    key: the data key (the same for the whole run; epochs and domains are folded in).
    step: the (traced) step count.
    batch_size: even, static.
    rows: "both", or only the "source" or the "target" half (static): the same rows as in the whole batch.

  Returns:
    image (B,32,32,3) float32 = uint8/255 - mean; label (B,) int32; domain (B,) int32 (0 source, 1 target);
    label_mask (B,) bool (True on source rows and on target rows whose label is known). With one half, B/2 rows.

  Raises:
    ValueError: odd batch size, or a half batch larger than a domain.
  """
  half = half_batch(batch_size)
  n_source, n_target = pair.source_labels.shape[0], pair.target_labels.shape[0]
  if half > min(n_source, n_target):
    raise ValueError(
      f"{batch_size=} needs {half} samples per domain, but source has {n_source} and target "
      f"{n_target}; use a smaller batch"
    )
  if rows not in ("both", "source", "target"):
    raise ValueError(f"{rows=} must be 'both', 'source' or 'target'")
  halves = []
  if rows != "target":
    source = epoch_indices(jax.random.fold_in(key, SOURCE), step, n_source, half)
    halves.append((pair.source_images[source], pair.source_labels[source], SOURCE, jnp.ones((half,), bool)))
  if rows != "source":
    target = epoch_indices(jax.random.fold_in(key, TARGET), step, n_target, half)
    known = jnp.zeros((half,), bool) if pair.target_label_known is None else pair.target_label_known[target]
    halves.append((pair.target_images[target], pair.target_labels[target], TARGET, known))
  images, labels, domains, masks = zip(*halves)
  return {
    "image": preprocess(jnp.concatenate(images), pair.mean),
    "label": jnp.concatenate(labels),
    "domain": jnp.concatenate([jnp.full((half,), d, jnp.int32) for d in domains]),
    "label_mask": jnp.concatenate(masks),
  }


def eval_batches(data: Any, batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
  """(images uint8, labels) numpy chunks of a `Domain` or an (images, labels) pair, in order; the last may be short."""
  if batch_size <= 0:
    raise ValueError(f"{batch_size=} must be positive")
  images, labels = _arrays(data)
  for start in range(0, len(labels), batch_size):
    yield images[start : start + batch_size], labels[start : start + batch_size]

"""Users' own domains: folders of images and `.npz` arrays, read into `Domain`s that the library trains on as is.

A domain is named by a spec, `folder:PATH` or `npz:PATH`, and read by `load_custom(spec, split)`:

- `folder:ROOT` with class subfolders, `ROOT/<class>/<image>` (images may also sit deeper below their class folder):
  labelled. The classes are the names of the subfolders that hold at least one image, sorted as strings (so `10`
  sorts before `2`); an image's label is the position of its class in that order, unless `classes=` gives the order.
- `folder:ROOT` with images and no class subfolders: unlabelled; every label is `UNLABELLED` (-1). Such a domain can
  be an adaptation target, never a source, and has no accuracy to measure.
- `npz:FILE` with `images` (N,H,W,C) uint8, C in {1, 3, 4}, or (N,H,W) grey, optional `labels` (N,) integers
  (-1 marks an unknown label) and optional `class_names` (K,) strings; no other key. Without `class_names` the
  classes are `"0"`, `"1"`, ... up to the largest label.
- `folder:PARENT` holding `train/` (and usually `test/`), or `npz:PARENT` holding `train.npz` (and usually
  `test.npz`): the two splits. The test split is labelled by the train split's classes, so both agree.

Without a test folder or file, `test=` names one, or `test_fraction=` holds out that fraction of each class of the
train images (seeded, the same for the same seed); otherwise the train split is every image and there is no test
split.

Every image becomes 32x32x3 uint8 by the rules of `images.py` (deterministic: the same files give the same bytes).
Reading a folder is `folders.py`, reading an `.npz` is `npz_files.py`; this file parses specs, splits and serves
domains, and checks that a source and a target share their label set.

References: Ganin & Lempitsky, arXiv 1409.7495, Sec. 3 (a labelled source and an unlabelled target domain sharing
one label set).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Sequence

import numpy as np

# The readers' names stay importable from here, the module users read their own data with.
from dann_jax.data.domains import UNLABELLED as UNLABELLED
from dann_jax.data.domains import Domain
from dann_jax.data.folders import folder_classes, read_folder
from dann_jax.data.folders import image_paths as image_paths
from dann_jax.data.images import IMAGE_SIZE as IMAGE_SIZE
from dann_jax.data.images import pil_to_rgb32 as pil_to_rgb32
from dann_jax.data.images import read_image as read_image
from dann_jax.data.images import to_rgb32 as to_rgb32
from dann_jax.data.npz_files import NPZ_KEYS as NPZ_KEYS
from dann_jax.data.npz_files import npz_label_range, read_npz

KINDS = ("folder", "npz")
SPLITS = ("train", "test")
_LISTED_CLASSES = 12  # class names shown in a provenance line before "..."


@dataclasses.dataclass(frozen=True, eq=False)
class CustomDomain(Domain):
  """A `Domain` read from a user's folder or `.npz`, which also knows its class names.

  Attributes:
    class_names: the class of each label index (label i is `class_names[i]`); empty for an unlabelled folder read
      without `classes=`.
  """

  class_names: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class CustomSpec:
  """Where the splits of a user's domain come from (build it with `parse_spec`).

  Attributes:
    text: the spec as written, e.g. "folder:data/amazon"; the name of the domains read from it.
    kind: "folder" or "npz".
    train: the folder or file of the train split (all images when `test_fraction` splits them).
    test: the folder or file of the test split, or None.
    test_fraction: the fraction of each class of `train` held out as the test split, or None.
    seed: the seed of that hold-out.
  """

  text: str
  kind: str
  train: Path
  test: Path | None = None
  test_fraction: float | None = None
  seed: int = 0


def is_spec(text: str) -> bool:
  """Whether `text` is written as a user's domain (`folder:PATH` or `npz:PATH`) rather than a built-in name."""
  kind, sep, path = str(text).partition(":")
  return bool(sep) and kind in KINDS and bool(path)


def absolute(text: str | os.PathLike[str]) -> str:
  """`folder:PATH` / `npz:PATH`, or a plain PATH, with PATH made absolute (`~` expanded), so that it names the same
  files from any working directory."""
  text = os.fspath(text)
  if is_spec(text):
    kind, _, path = text.partition(":")
    return f"{kind}:{os.path.abspath(os.path.expanduser(path))}"
  return os.path.abspath(os.path.expanduser(text))


def _strip_kind(value: str | os.PathLike[str], kind: str, what: str) -> Path:
  text = os.fspath(value)
  prefix, sep, rest = text.partition(":")
  if sep and prefix in KINDS:
    if prefix != kind:
      raise ValueError(f"{what}={text!r} is a {prefix} but the train split is a {kind}; give a {kind} for both")
    text = rest
  return Path(text).expanduser()


def parse_spec(
  text: str, *, test: str | os.PathLike[str] | None = None, test_fraction: float | None = None, seed: int = 0
) -> CustomSpec:
  """Reads `folder:PATH` or `npz:PATH` and finds the splits on disk.

  Args:
    text: `folder:PATH` (a class-subfolder folder, a flat folder of images, or a parent with `train/` and
      optionally `test/`) or `npz:PATH` (an `.npz` file, or a folder with `train.npz` and optionally `test.npz`).
    test: the test split's folder or file (plain, or written as a spec of the same kind), when PATH has none.
    test_fraction: instead of `test`, the fraction in (0, 1) of each class held out of the train images as the
      test split.
    seed: the seed of that hold-out.

  Returns:
    The resolved `CustomSpec`.

  Raises:
    ValueError: a spec of another form, conflicting split options, or a fraction outside (0, 1).
    FileNotFoundError: PATH (or `test`) does not exist, or an npz folder lacks `train.npz`.
  """
  kind, sep, raw = str(text).partition(":")
  if not sep or kind not in KINDS or not raw:
    raise ValueError(
      f"spec {text!r} is not a user's domain; write folder:PATH (class subfolders of images) or "
      "npz:PATH (an .npz with images and labels)"
    )
  path = Path(raw).expanduser()
  if not path.exists():
    raise FileNotFoundError(
      f"spec {text!r}: {str(path)!r} does not exist; give an existing "
      f"{'folder' if kind == 'folder' else '.npz file or folder of train.npz/test.npz'}"
    )
  if test is not None and test_fraction is not None:
    raise ValueError(f"{test=} and {test_fraction=} both choose the test split of {text!r}; give one of them")
  if test_fraction is not None and not 0.0 < float(test_fraction) < 1.0:
    raise ValueError(f"{test_fraction=} must lie strictly between 0 and 1 (e.g. 0.2 holds out a fifth of each class)")
  train, own_test = path, None
  if kind == "folder":
    if not path.is_dir():
      raise ValueError(f"spec {text!r}: {str(path)!r} is a file, not a folder; use npz:PATH for an .npz file")
    if (path / "train").is_dir():
      train = path / "train"
      own_test = path / "test" if (path / "test").is_dir() else None
  elif path.is_dir():
    if not (path / "train.npz").is_file():
      raise FileNotFoundError(
        f"spec {text!r}: the folder {str(path)!r} holds no train.npz; give the .npz file "
        "itself, or a folder with train.npz and test.npz"
      )
    train = path / "train.npz"
    own_test = path / "test.npz" if (path / "test.npz").is_file() else None
  if own_test is not None and (test is not None or test_fraction is not None):
    raise ValueError(
      f"spec {text!r} already has a test split ({str(own_test)!r}); drop test= / test_fraction=, "
      "or point the spec at the train split alone"
    )
  if test is not None:
    own_test = _strip_kind(test, kind, "test")
    if not own_test.exists():
      raise FileNotFoundError(f"test={os.fspath(test)!r} does not exist; give the test split's {kind}")
  return CustomSpec(
    text=str(text),
    kind=kind,
    train=train,
    test=own_test,
    test_fraction=None if test_fraction is None else float(test_fraction),
    seed=int(seed),
  )


# ---------------------------------------------------------------------------------------------------------------
# Splits and domains.


def split_indices(labels: np.ndarray, test_fraction: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """A seeded hold-out of `test_fraction` of each class (unknown labels form one group of their own).

  Each group of n images gives floor(n * test_fraction + 0.5) to the test split, chosen by one
  `np.random.default_rng(seed)` visiting the groups in label order; the same labels and seed give the same split.

  Returns:
    (train indices, test indices), each sorted, so both splits keep the files' order.

  Raises:
    ValueError: a fraction outside (0, 1), or a split that would be empty.
  """
  if not 0.0 < test_fraction < 1.0:
    raise ValueError(f"{test_fraction=} must lie strictly between 0 and 1")
  labels = np.asarray(labels)
  rng = np.random.default_rng(seed)
  test = []
  for value in np.unique(labels):
    members = np.flatnonzero(labels == value)
    take = int(np.floor(len(members) * test_fraction + 0.5))
    test.append(rng.permutation(members)[:take])
  held = np.zeros(len(labels), bool)
  held[np.concatenate(test)] = True
  if held.all() or not held.any():
    raise ValueError(
      f"{test_fraction=} of {len(labels)} images leaves an empty "
      f"{'train' if held.all() else 'test'} split; use a fraction nearer 0.5 or more images"
    )
  return np.flatnonzero(~held), np.flatnonzero(held)


def _describe_classes(names: Sequence[str]) -> str:
  shown = ", ".join(names[:_LISTED_CLASSES])
  return shown + (", ..." if len(names) > _LISTED_CLASSES else "")


def _read(kind: str, path: Path, classes: tuple[str, ...] | None):
  return (read_folder if kind == "folder" else read_npz)(path, classes=classes)


def _spec_classes(spec: CustomSpec, classes: Sequence[str] | None) -> tuple[str, ...] | None:
  """The label order of every split of `spec`: `classes`, else the train split's (folders), else both files'."""
  if classes is not None:
    return tuple(str(c) for c in classes)
  if spec.kind == "folder":
    found = folder_classes(spec.train)
    return found or None  # a flat train folder: unlabelled
  names, top = npz_label_range(spec.train)
  if spec.test is not None:
    test_names, test_top = npz_label_range(spec.test)
    if names is not None and test_names is not None and names != test_names:
      raise ValueError(
        f"class_names of {str(spec.train)!r} {list(names)} and of {str(spec.test)!r} "
        f"{list(test_names)} differ; the splits of one domain share their classes"
      )
    names = names or test_names
    top = max(top, test_top)
  return names if names is not None else (tuple(str(i) for i in range(top + 1)) if top >= 0 else None)


def _resolve(spec: str | CustomSpec, test, test_fraction, seed) -> CustomSpec:
  if not isinstance(spec, CustomSpec):
    return parse_spec(spec, test=test, test_fraction=test_fraction, seed=seed)
  if test is not None or test_fraction is not None:
    raise ValueError("give test= / test_fraction= to parse_spec, not with a CustomSpec")
  return spec


def _as_domain(
  spec: CustomSpec, images: np.ndarray, labels: np.ndarray, names: Sequence[str], origin: str
) -> CustomDomain:
  labelled = bool(np.any(labels >= 0))
  what = (
    f"{len(names)} classes: {_describe_classes(names)}"
    if labelled
    else "unlabelled"
    if not names
    else f"unlabelled, classes {_describe_classes(names)}"
  )
  provenance = f"{spec.text}: {len(labels)} images ({what}) from {origin}, as 32x32x3 uint8 (Pillow bilinear resize)"
  return CustomDomain(
    name=spec.text,
    images=images,
    labels=labels,
    num_classes=len(names),
    provenance=provenance,
    class_names=tuple(names),
  )


def _load(spec: CustomSpec, splits: Sequence[str], classes: Sequence[str] | None) -> dict[str, CustomDomain]:
  """The asked splits of `spec`; a seeded hold-out reads the images once for both of its splits."""
  names = _spec_classes(spec, classes)
  if spec.test_fraction is not None:
    images, labels, names = _read(spec.kind, spec.train, names)
    rows = dict(zip(SPLITS, split_indices(labels, spec.test_fraction, spec.seed)))
    return {
      split: _as_domain(
        spec,
        images[rows[split]],
        labels[rows[split]],
        names,
        f"the {split} part of a seeded hold-out (test_fraction={spec.test_fraction}, "
        f"seed={spec.seed}) of {str(spec.train)!r}",
      )
      for split in splits
    }
  loaded = {}
  for split in splits:
    path = spec.train if split == "train" else spec.test
    if path is None:
      raise ValueError(
        f"{spec.text!r} has no test split; add {'test/' if spec.kind == 'folder' else 'test.npz'} "
        "beside train, give test=PATH, or hold images out with test_fraction=F (e.g. 0.2)"
      )
    images, labels, split_names = _read(spec.kind, path, names)
    loaded[split] = _as_domain(spec, images, labels, split_names, repr(str(path)))
  return loaded


def load_custom(
  spec: str | CustomSpec,
  split: str = "train",
  *,
  test: str | os.PathLike[str] | None = None,
  test_fraction: float | None = None,
  seed: int = 0,
  classes: Sequence[str] | None = None,
) -> CustomDomain:
  """One split of a user's domain, read from a folder or an `.npz` (see the module docstring for the layouts).

  Args:
    spec: `folder:PATH` or `npz:PATH` (or a `CustomSpec` from `parse_spec`).
    split: 'train' or 'test'.
    test: the test split's folder or file, when PATH has none (see `parse_spec`).
    test_fraction: instead, the fraction of each class held out of the train images as the test split.
    seed: the seed of that hold-out; the same seed gives the same split.
    classes: the class names in label order; default: the train split's (sorted class folders, or the .npz's
      `class_names`, or "0".."K-1"). Give the source's `class_names` to label a target by the source's classes.

  Returns:
    A `CustomDomain` named `spec`, of (N,32,32,3) uint8 images and (N,) int32 labels.

  Raises:
    ValueError: a bad spec or option, a split that does not exist, or bad data (see `read_folder`, `read_npz`).
    FileNotFoundError: a missing path, or a folder without images.
  """
  spec = _resolve(spec, test, test_fraction, seed)
  if split not in SPLITS:
    raise ValueError(f"{split=} is not a split; use 'train' or 'test'")
  return _load(spec, (split,), classes)[split]


def load_custom_splits(
  spec: str | CustomSpec,
  *,
  test: str | os.PathLike[str] | None = None,
  test_fraction: float | None = None,
  seed: int = 0,
  classes: Sequence[str] | None = None,
) -> tuple[CustomDomain, CustomDomain | None]:
  """(train, test) of a user's domain, each file read once; test is None when the spec has no test split.

  Arguments and errors as `load_custom`.
  """
  spec = _resolve(spec, test, test_fraction, seed)
  has_test = spec.test is not None or spec.test_fraction is not None
  loaded = _load(spec, SPLITS if has_test else ("train",), classes)
  return loaded["train"], loaded.get("test")


def load_folder(
  folder: str | os.PathLike[str], *, classes: Sequence[str] | None = None, name: str | None = None
) -> CustomDomain:
  """All images of one folder (class subfolders, or flat and unlabelled) as a `CustomDomain`; no splits."""
  images, labels, names = read_folder(folder, classes=classes)
  kind = "class folders" if np.any(labels >= 0) else "images (unlabelled)"
  return CustomDomain(
    name=name or f"folder:{os.fspath(folder)}",
    images=images,
    labels=labels,
    num_classes=len(names),
    class_names=names,
    provenance=f"{len(labels)} {kind} of {os.fspath(folder)!r}, 32x32x3 uint8 (Pillow bilinear)",
  )


def load_npz(
  path: str | os.PathLike[str], *, classes: Sequence[str] | None = None, name: str | None = None
) -> CustomDomain:
  """All images of one `.npz` as a `CustomDomain`; no splits."""
  images, labels, names = read_npz(path, classes=classes)
  return CustomDomain(
    name=name or f"npz:{os.fspath(path)}",
    images=images,
    labels=labels,
    num_classes=len(names),
    class_names=names,
    provenance=f"{len(labels)} images of {os.fspath(path)!r}, 32x32x3 uint8 (Pillow bilinear)",
  )


def class_names(domain: Domain) -> tuple[str, ...]:
  """A domain's class names: its own for a `CustomDomain`, else "0".."num_classes-1" (the digit domains)."""
  names = getattr(domain, "class_names", ())
  return tuple(names) if names else tuple(str(i) for i in range(domain.num_classes))


def is_labelled(domain: Domain) -> bool:
  """Whether any image of `domain` has a known label."""
  return bool(np.any(np.asarray(domain.labels) >= 0))


def check_label_sets(source: Domain, target: Domain) -> None:
  """Checks that `target` uses the label set of `source`, index for index.

  The source must be labelled throughout. An unlabelled target passes unless it was given other class names.

  Raises:
    ValueError: an unlabelled source image, or different class names (the message lists the classes found only in
      the source and only in the target, or the two orders).
  """
  unknown = int(np.sum(np.asarray(source.labels) < 0))
  if unknown:
    raise ValueError(
      f"the source {source.name!r} has {unknown} of {len(source)} images without a label; a source "
      "must be labelled: use class subfolders (ROOT/<class>/<image>) or an .npz with labels"
    )
  target_names = getattr(target, "class_names", ())
  if not is_labelled(target) and not target_names:
    return
  src, tgt = class_names(source), class_names(target)
  if src == tgt:
    return
  only_source = [c for c in src if c not in tgt]
  only_target = [c for c in tgt if c not in src]
  if only_source or only_target:
    raise ValueError(
      f"the label sets of source {source.name!r} and target {target.name!r} differ: only in the "
      f"source: {only_source}; only in the target: {only_target}; give both the same class folders, or, "
      "when the target merely lacks classes, load it with classes=source.class_names"
    )
  raise ValueError(
    f"source {source.name!r} and target {target.name!r} have the same classes in different orders "
    f"(source {list(src)}, target {list(tgt)}); load the target with classes=source.class_names"
  )

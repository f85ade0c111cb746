"""A user's folder of images: the class-subfolder layout (`ROOT/<class>/.../<image>`) or a flat, unlabelled folder.

The classes are the names of the subfolders that hold at least one image, sorted as strings (so `10` sorts before
`2`); an image's label is the position of its class in that order, unless `classes=` gives the order. A folder with
images and no class subfolders is unlabelled: every label is `UNLABELLED` (-1). Hidden files and folders (names
starting with ".") are skipped, and so are files whose suffix is not an image format Pillow opens. Each image is
read by `images.read_image`, the classes in label order and each class's files sorted by path.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from dann_jax.data.domains import UNLABELLED
from dann_jax.data.images import IMAGE_SIZE, image_suffixes, read_image


def _visible(path: Path, root: Path) -> bool:
  return not any(part.startswith(".") for part in path.relative_to(root).parts)


def _images_below(folder: Path, suffixes: frozenset[str], recursive: bool) -> list[Path]:
  entries = folder.rglob("*") if recursive else folder.iterdir()
  return sorted(p for p in entries if p.suffix.lower() in suffixes and p.is_file() and _visible(p, folder))


def _folder_layout(folder: Path) -> tuple[dict[str, list[Path]], list[Path]]:
  """(class name -> its image files, loose image files at the top), hidden entries and image-less folders left out."""
  if not folder.is_dir():
    raise FileNotFoundError(f"{str(folder)!r} is not a folder; give a folder of class subfolders of images")
  suffixes = image_suffixes()
  classes = {}
  for sub in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
    files = _images_below(sub, suffixes, recursive=True)
    if files:
      classes[sub.name] = files
  return classes, _images_below(folder, suffixes, recursive=False)


def folder_classes(folder: str | os.PathLike[str]) -> tuple[str, ...]:
  """The class names of a class-subfolder folder (sorted subfolder names); () for a flat folder of images."""
  classes, _ = _folder_layout(Path(folder).expanduser())
  return tuple(classes)


def _check_known(found: Sequence[str], classes: Sequence[str], where: str) -> None:
  unknown = [c for c in found if c not in classes]
  if unknown:
    raise ValueError(
      f"{where} has class folders {unknown} that are not among the classes {list(classes)}; "
      "give every split (and the target) the same class folders, or list them all in classes="
    )


def read_folder(
  folder: str | os.PathLike[str], *, classes: Sequence[str] | None = None
) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
  """Reads a folder of images, in the class-subfolder layout or flat (unlabelled).

  Args:
    folder: `ROOT` with `ROOT/<class>/.../<image>`, or with images only at its top.
    classes: the class names in label order; default: the subfolders' names, sorted. Every subfolder must be one
      of them; a class without a subfolder simply has no images.

  Returns:
    (images (N,32,32,3) uint8, labels (N,) int32, class names). A flat folder gives labels `UNLABELLED` and the
    class names `classes` (or ()).

  Raises:
    FileNotFoundError: the folder does not exist or holds no image.
    ValueError: class subfolders mixed with loose images, a subfolder outside `classes`, or an unreadable image.
  """
  files, labels, names = _folder_files(folder, classes)
  images = np.empty((len(files), IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8)
  for i, path in enumerate(files):
    images[i] = read_image(path)
  return images, labels, tuple(names)


def image_paths(folder: str | os.PathLike[str], *, classes: Sequence[str] | None = None) -> list[Path]:
  """The image files of a folder in the order `read_folder` reads them (its rows)."""
  return _folder_files(folder, classes)[0]


def _folder_files(folder, classes) -> tuple[list[Path], np.ndarray, tuple[str, ...]]:
  folder = Path(folder).expanduser()
  found, loose = _folder_layout(folder)
  if found and loose:
    raise ValueError(
      f"{str(folder)!r} holds both class subfolders ({', '.join(found)}) and loose images "
      f"({loose[0].name}, ...); move the loose images into class folders, or into a folder of their own"
    )
  if not found and not loose:
    raise FileNotFoundError(
      f"no image below {str(folder)!r}; give a folder of class subfolders of images "
      "(ROOT/<class>/<image>) or a flat folder of images"
    )
  if classes is not None:
    classes = tuple(str(c) for c in classes)
    if len(set(classes)) != len(classes):
      raise ValueError(f"classes={list(classes)} repeats a name; give each class once")
  if not found:
    files, labels = loose, np.full(len(loose), UNLABELLED, np.int32)
    names = classes or ()
  else:
    names = classes if classes is not None else tuple(found)
    _check_known(list(found), names, repr(str(folder)))
    files = [f for name in names for f in found.get(name, ())]
    labels = np.asarray([i for i, name in enumerate(names) for _ in found.get(name, ())], np.int32)
  return files, labels, tuple(names)

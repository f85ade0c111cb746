"""Rendered house-number-like digits ("syn-digits"), in the spirit of the paper's Syn Numbers.

Each 32x32 image shows a one-, two- or three-digit number drawn with a TrueType font of this machine; the label is the
digit at the centre of the crop (as in SVHN's cropped format, neighbours may be cut by the border). Varied per image:
font, size, spacing, position, rotation, background (flat or gradient) and stroke colours, blur and noise. Fonts come
from the usual font directories, filtered by an allowlist of text families (symbol and math fonts draw no usable
digits); DejaVu is always there. Rendering is split into chunks, each with its own seed, run in a process pool, so
the bytes depend only on (seed, split, chunk index), not on the number of workers. The pool is started by a helper
process whose main module is this one, so any caller works, guarded by `if __name__ == "__main__":` or not.

References: Ganin & Lempitsky, arXiv 1409.7495, Sec. 5 ("Syn Numbers": ~500,000 images rendered from Windows fonts,
varying positioning, orientation, background and stroke colours, and blur); Netzer et al. 2011 (SVHN format).
"""

from __future__ import annotations

import concurrent.futures
import functools
import hashlib
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np

FONT_DIRS = ("/usr/share/fonts", "/usr/local/share/fonts", "~/.fonts", "~/.local/share/fonts")
# Text families known to draw the ten digits legibly (file-name prefixes).
FONT_ALLOWLIST = (
  "DejaVuSans",
  "DejaVuSerif",
  "Liberation",
  "FreeSans",
  "FreeSerif",
  "FreeMono",
  "Ubuntu",
  "Roboto",
  "NotoSans-",
  "NotoSerif-",
  "NotoSansMono-",
  "OpenSans",
  "Lato",
  "Cantarell",
  "Arimo",
  "Tinos",
  "Cousine",
  "Carlito",
  "Caladea",
  "Arial",
  "Times",
  "Verdana",
  "Georgia",
  "Courier",
  "Tahoma",
  "Trebuchet",
)
FONT_BLOCKLIST = ("Math", "Symbol", "Emoji", "Dingbat", "Wingding", "Webding")
SPLIT_IDS = {"train": 0, "test": 1}
DIGIT_COUNT_PROBS = (0.25, 0.4, 0.35)  # one-, two-, three-digit numbers
IMAGE_SIZE = 32
_SCALE = 2  # draw at 2x, then downsample (anti-aliasing like a camera crop)


def find_fonts(dirs: Sequence[str] = FONT_DIRS) -> tuple[str, ...]:
  """Allowlisted .ttf/.otf fonts found below `dirs`, one per file name, sorted by file name."""
  found = {}
  for directory in dirs:
    root = Path(directory).expanduser()
    if not root.is_dir():
      continue
    for path in root.rglob("*"):
      name = path.name
      if (
        path.suffix.lower() in (".ttf", ".otf")
        and name.startswith(FONT_ALLOWLIST)
        and not any(bad in name for bad in FONT_BLOCKLIST)
      ):
        found.setdefault(name, str(path))
  return tuple(found[name] for name in sorted(found))


def fonts_fingerprint(fonts: Sequence[str]) -> str:
  """A short digest of the font files' names and bytes, for cache keys (other fonts, other images)."""
  digest = hashlib.md5()
  for path in fonts:
    digest.update(os.path.basename(path).encode())
    digest.update(Path(path).read_bytes())
  return digest.hexdigest()[:12]


@functools.lru_cache(maxsize=512)
def _font(path: str, size: int):
  from PIL import ImageFont  # pylint: disable=g-import-not-at-top

  return ImageFont.truetype(path, size)


def compose_number(rng: np.random.Generator) -> tuple[str, int]:
  """A random 1-3 digit string and the index of the digit that will sit at the centre (the label)."""
  count = int(rng.choice(len(DIGIT_COUNT_PROBS), p=DIGIT_COUNT_PROBS)) + 1
  text = "".join(str(d) for d in rng.integers(0, 10, size=count))
  return text, int(rng.integers(count))


def _luma(rgb: np.ndarray) -> float:
  return float(rgb @ np.array([0.299, 0.587, 0.114]))


def _colours(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
  """Background and stroke colours with enough luminance contrast to read the digit."""
  background = rng.uniform(0, 255, size=3)
  for _ in range(20):
    stroke = rng.uniform(0, 255, size=3)
    if abs(_luma(stroke) - _luma(background)) >= 60:
      break
  else:
    stroke = np.where(background > 127, 0.0, 255.0)
  return background, stroke


def _text_mask(text: str, centre: int, font_path: str, rng: np.random.Generator) -> np.ndarray:
  """The number drawn in white on black at 2x scale, digit `centre` near the middle, rotated; float in [0, 1]."""
  from PIL import Image, ImageDraw  # pylint: disable=g-import-not-at-top

  side = IMAGE_SIZE * _SCALE
  canvas = 3 * side  # room for neighbours that the crop cuts
  font = _font(font_path, int(rng.integers(20, 33)) * _SCALE)
  spacing = rng.uniform(-1, 3) * _SCALE
  mask = Image.new("L", (canvas, canvas), 0)
  draw = ImageDraw.Draw(mask)
  advances = [font.getlength(ch) + spacing for ch in text]
  x_start = -sum(advances[:centre])  # relative to the centre digit's origin
  left, top, right, bottom = font.getbbox(text[centre])
  jitter = rng.uniform(-2.5, 2.5, size=2) * _SCALE
  origin_x = canvas / 2 - (left + right) / 2 + jitter[0]
  origin_y = canvas / 2 - (top + bottom) / 2 + jitter[1]
  x = origin_x + x_start
  for ch, advance in zip(text, advances):
    draw.text((x, origin_y), ch, fill=255, font=font)
    x += advance
  mask = mask.rotate(float(rng.uniform(-15, 15)), resample=Image.BILINEAR, center=(canvas / 2, canvas / 2))
  mask = mask.crop((side, side, 2 * side, 2 * side)).resize((IMAGE_SIZE, IMAGE_SIZE), Image.BOX)
  return np.asarray(mask, np.float32) / 255.0


def _background(colour: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """A flat or linearly graded 32x32 background around `colour`."""
  field = np.broadcast_to(colour, (IMAGE_SIZE, IMAGE_SIZE, 3)).astype(np.float32)
  if rng.random() < 0.5:
    other = np.clip(colour + rng.normal(0, 40, size=3), 0, 255)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = (
      np.cos(angle) * np.linspace(0, 1, IMAGE_SIZE)[None, :] + np.sin(angle) * np.linspace(0, 1, IMAGE_SIZE)[:, None]
    )
    ramp = (ramp - ramp.min()) / max(np.ptp(ramp), 1e-6)
    field = field * (1 - ramp[..., None]) + other.astype(np.float32) * ramp[..., None]
  return field


def render_one(rng: np.random.Generator, fonts: Sequence[str]) -> tuple[np.ndarray, int]:
  """One rendered image (32,32,3) uint8 and its label."""
  from scipy import ndimage  # pylint: disable=g-import-not-at-top

  text, centre = compose_number(rng)
  mask = _text_mask(text, centre, fonts[int(rng.integers(len(fonts)))], rng)
  background, stroke = _colours(rng)
  image = _background(background, rng) * (1 - mask[..., None]) + stroke.astype(np.float32) * mask[..., None]
  sigma = rng.uniform(0, 1.0)
  if sigma > 0.2:
    image = ndimage.gaussian_filter(image, sigma=(sigma, sigma, 0))
  image = image + rng.normal(0, rng.uniform(0, 8), size=image.shape)
  return np.clip(np.rint(image), 0, 255).astype(np.uint8), int(text[centre])


def render_chunk(
  seed: int, split_id: int, chunk_index: int, count: int, fonts: Sequence[str]
) -> tuple[np.ndarray, np.ndarray]:
  """`count` images seeded by (seed, split_id, chunk_index) only; runs in a worker process."""
  rng = np.random.default_rng(np.random.SeedSequence([seed, split_id, chunk_index]))
  images = np.empty((count, IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8)
  labels = np.empty((count,), np.int32)
  for i in range(count):
    images[i], labels[i] = render_one(rng, fonts)
  return images, labels


def render_digits(
  count: int,
  *,
  seed: int = 0,
  split: str = "train",
  fonts: Sequence[str] | None = None,
  workers: int | None = None,
  chunk_size: int = 2000,
) -> tuple[np.ndarray, np.ndarray]:
  """Renders `count` syn-digits images in parallel chunks.

  Args:
    count: number of images.
    seed: base seed; the same (seed, split, count, chunk_size, fonts) gives the same bytes.
    split: 'train' or 'test' (different random streams).
    fonts: font files; default `find_fonts()`.
    workers: processes (default: all cores); 1 renders in this process.
    chunk_size: images per chunk (the unit of seeding and of parallel work).

  Returns:
    images (count,32,32,3) uint8, labels (count,) int32.
  """
  if split not in SPLIT_IDS:
    raise ValueError(f"{split=} is not a split; use 'train' or 'test'")
  if count < 1 or chunk_size < 1:
    raise ValueError(f"{count=} and {chunk_size=} must be positive")
  fonts = tuple(find_fonts() if fonts is None else fonts)
  if not fonts:
    raise FileNotFoundError(f"no allowlisted font found in {FONT_DIRS}; install fonts-dejavu-core or pass fonts=")
  sizes = [min(chunk_size, count - start) for start in range(0, count, chunk_size)]
  jobs = [(seed, SPLIT_IDS[split], index, size, fonts) for index, size in enumerate(sizes)]
  workers = min(workers or os.cpu_count() or 1, len(jobs))
  if workers == 1:
    results = [render_chunk(*job) for job in jobs]
  else:
    results = _render_in_helper_process(jobs, workers)
  return np.concatenate([r[0] for r in results]), np.concatenate([r[1] for r in results])


def _render_in_helper_process(jobs: list[tuple], workers: int) -> list[tuple[np.ndarray, np.ndarray]]:
  """Renders `jobs` in a pool started by a helper process that runs only this module.

  A pool started from the caller's process would re-run the caller's main module in every worker (the spawn start
  method does that; fork is unsafe once JAX's threads exist), which breaks scripts without an
  `if __name__ == "__main__":` guard and scripts read from standard input. The helper's main module is this one, so
  its workers import only library code. Should the helper fail to start, the chunks are rendered here, one by one.
  """
  with tempfile.TemporaryDirectory(prefix="dann_jax_render_") as tmp:
    request, result = Path(tmp) / "jobs.json", Path(tmp) / "chunks.npz"
    request.write_text(json.dumps({"jobs": jobs, "workers": workers}))
    try:
      done = subprocess.run(
        [sys.executable, "-m", __name__, str(request), str(result)], capture_output=True, text=True, check=False
      )
    except OSError as e:
      warnings.warn(f"could not start the rendering helper process ({e}); rendering in this process")
      done = None
    if done is not None and done.returncode == 0 and result.exists():
      with np.load(result) as arrays:
        return [(arrays[f"images_{i}"], arrays[f"labels_{i}"]) for i in range(len(jobs))]
    if done is not None:
      warnings.warn(
        "the rendering helper process failed (exit code "
        f"{done.returncode}: {done.stderr.strip()[-300:]}); rendering in this process"
      )
  return [render_chunk(*job) for job in jobs]


def _helper_main(request: str, result: str) -> None:
  """The helper process: renders the requested chunks in a spawn pool and saves them to `result`."""
  spec = json.loads(Path(request).read_text())
  jobs = [(seed, split_id, index, size, tuple(fonts)) for seed, split_id, index, size, fonts in spec["jobs"]]
  context = multiprocessing.get_context("spawn")
  with concurrent.futures.ProcessPoolExecutor(spec["workers"], mp_context=context) as pool:
    results = list(pool.map(render_chunk, *zip(*jobs)))
  arrays = {}
  for i, (images, labels) in enumerate(results):
    arrays[f"images_{i}"], arrays[f"labels_{i}"] = images, labels
  np.savez(result, **arrays)


if __name__ == "__main__":
  _helper_main(*sys.argv[1:3])

"""Recovery data: what `--data` names, as items the training loop draws global batches from.

    DIR/            images: an ImageFolder layout (DIR/CLASS/IMG, labels are the class folders
                    in sorted order, as torchvision.datasets.ImageFolder numbers them), or a flat
                    folder of images (no labels)
    FILE.txt        text, one item per non-blank line, tokenized with the model's tokenizer
    FILE.pt         tensors (torch.load(weights_only=True): no code runs): a tensor of N inputs
                    of a one-input model; a tuple of the model's inputs, each N along dim 0,
                    optionally followed by N integer labels; or a list of such tuples (joined)
    pkg.mod:factory factory() returns a DataLoader (or any iterable of batches): this RUNS THE
                    USER'S CODE. Each batch it yields is one global batch: a tensor, or a tuple
                    of the inputs optionally followed by labels

Images are converted to the example input's channels (RGB for 3, grayscale for 1), resized to
its H x W (training: a random resized crop, scale 0.35 to 1, and a random horizontal flip;
evaluation: resized to 1/0.875 of the crop and center-cropped, the ImageNet recipe), then
normalized with the ImageNet mean and standard deviation unless other values are given.

Every random choice is a function of (seed, position in the stream), not of a global RNG:
global batch t is items t*B .. t*B+B-1 of an endless stream of seeded permutations, so a run
resumed at step t, or split over N processes, sees exactly the same items and crops.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import NamedTuple

import torch

from ..errors import InputError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
TEXT_SUFFIXES = (".txt", ".text", ".lines")
_FACTORY = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*")
_FORMS = ("an image folder, a tensor file (.pt), a text file of lines (.txt) or package.module:factory")


class Batch(NamedTuple):
    inputs: tuple
    labels: torch.Tensor | None


class ItemData(torch.utils.data.Dataset):
    """Items of recovery data: data[i] is the i-th item's inputs (a tuple, without a batch
    dim), plus its label where the data has labels, unaugmented. sample(i, seed) is the
    training view (random crops for images). `source` names what the user gave."""

    source: str = ""
    has_labels: bool = False

    def sample(self, index: int, seed: int) -> tuple:
        return self[index]

    def label_range(self) -> tuple[int, int] | None:
        return None


class TensorItems(ItemData):
    def __init__(self, inputs: tuple, labels: torch.Tensor | None, source: str):
        self.inputs, self.labels, self.source, self.has_labels = inputs, labels, source, labels is not None

    def __len__(self):
        return int(self.inputs[0].shape[0])

    def __getitem__(self, i):
        item = tuple(t[i] for t in self.inputs)
        return item + (self.labels[i],) if self.has_labels else item

    def label_range(self):
        return (int(self.labels.min()), int(self.labels.max())) if self.has_labels else None


class ImageItems(ItemData):
    def __init__(self, files: list, labels: list | None, shape: tuple, source: str, mean, std):
        self.files, self.labels, self.source, self.has_labels = files, labels, source, labels is not None
        self.channels, self.size = int(shape[0]), (int(shape[-2]), int(shape[-1]))
        self.mean, self.std = mean, std

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        return self._item(i, self._eval_transform())

    def sample(self, i, seed):
        from torchvision.transforms import v2
        t = v2.Compose([v2.RandomResizedCrop(self.size, scale=(0.35, 1.0), antialias=True),
                        v2.RandomHorizontalFlip()])
        with torch.random.fork_rng(devices=[]):  # the crop is a function of the seed alone
            torch.manual_seed(seed)
            return self._item(i, t)

    def _eval_transform(self):
        from torchvision.transforms import v2
        side = round(min(self.size) / 0.875)
        return v2.Compose([v2.Resize(side, antialias=True), v2.CenterCrop(self.size)])

    def _item(self, i, transform):
        from PIL import Image
        from torchvision.transforms.v2 import functional as F
        path = self.files[i]
        try:
            with Image.open(path) as img:
                img = img.convert("RGB" if self.channels == 3 else "L")
        except OSError as e:
            raise InputError(f"{path}: cannot be read as an image ({e}): remove it from {self.source}") from e
        x = F.to_dtype(F.pil_to_tensor(img), torch.float32, scale=True)
        x = transform(x)
        if self.mean is not None:
            x = F.normalize(x, list(self.mean[: self.channels]), list(self.std[: self.channels]))
        return (x, torch.tensor(self.labels[i])) if self.has_labels else (x,)

    def label_range(self):
        return (min(self.labels), max(self.labels)) if self.has_labels else None


class LoaderData:
    """A user's DataLoader: each batch it yields is one global batch, in its own order. Epoch e
    starts with torch's RNG seeded to seed + e, so a shuffling loader repeats its order."""

    def __init__(self, loader, source: str, n_inputs: int):
        self.loader, self.source, self.n_inputs, self.has_labels = loader, source, n_inputs, None

    def split(self, batch) -> Batch:
        """A batch as inputs and labels: a tensor, or a tuple/list of the inputs, optionally
        followed by one tensor of labels."""
        items = (batch,) if isinstance(batch, torch.Tensor) else batch
        if not isinstance(items, (tuple, list)) or not all(isinstance(t, torch.Tensor) for t in items) or \
                len(items) not in (self.n_inputs, self.n_inputs + 1):
            raise InputError(f"{self.source}: yields a batch of {_describe(batch)}; the model takes {self.n_inputs} "
                             f"input(s): yield a tuple of them, optionally followed by a tensor of labels")
        items = tuple(items)
        return Batch(items[: self.n_inputs], items[self.n_inputs] if len(items) > self.n_inputs else None)


def _describe(obj) -> str:
    if isinstance(obj, (tuple, list)):
        return f"{type(obj).__name__} of {len(obj)} ({', '.join(type(t).__name__ for t in obj[:4])})"
    return type(obj).__name__


# ---------------------------------------------------------------- loading

def check_spec(spec) -> None:
    """Fail at once, before models load, where a data path is missing or an empty file."""
    spec = str(spec)
    path = Path(spec)
    if _FACTORY.fullmatch(spec) and not path.exists():
        return
    if not path.exists():
        raise InputError(f"{path}: no such data file or folder: give {_FORMS}")
    if path.is_file() and path.stat().st_size == 0:
        raise InputError(f"{path}: the data file is empty: give {_FORMS}")


def load_data(spec, example_inputs: tuple, *, tokenizer=None, mean=IMAGENET_MEAN, std=IMAGENET_STD,
              model=None):
    """The recovery data that `spec` names (see the module docstring): an ItemData, or a
    LoaderData for a factory. `example_inputs` give the image size and channels, the text
    length and the number of inputs; `tokenizer` (a Hugging Face tokenizer) is needed for
    text; `model` orders the tokenizer's outputs by its forward's parameter names.
    mean, std: image normalization (None: none). Raises InputError naming the file."""
    spec = str(spec)
    path = Path(spec)
    if _FACTORY.fullmatch(spec) and not path.exists():
        return _load_factory(spec, len(example_inputs))
    check_spec(spec)
    if path.is_dir():
        return _load_images(path, example_inputs, mean, std)
    if path.suffix.lower() in TEXT_SUFFIXES:
        return _load_text(path, example_inputs, tokenizer, model)
    return _load_tensors(path, len(example_inputs))


def _load_factory(spec: str, n_inputs: int) -> LoaderData:
    from ..load import import_factory
    factory = import_factory(spec, "a DataLoader", InputError)
    loader = factory()
    if not hasattr(loader, "__iter__") or isinstance(loader, (torch.Tensor, str)):
        raise InputError(f"{spec}: the factory returned {type(loader).__name__}, not a DataLoader: return a "
                         "torch.utils.data.DataLoader (or an iterable of batches)")
    return LoaderData(loader, spec, n_inputs)


def _load_images(path: Path, example_inputs: tuple, mean, std) -> ImageItems:
    shape = tuple(example_inputs[0].shape)
    if len(example_inputs) != 1 or len(shape) != 4 or shape[1] not in (1, 3):
        raise InputError(f"{path}: an image folder feeds a model of one image input (N, 1 or 3, H, W), and this "
                         f"model takes {len(example_inputs)} input(s), the first of shape {list(shape)}: give a "
                         "tensor file or a factory instead")
    classes = sorted(d.name for d in path.iterdir() if d.is_dir() and not d.name.startswith("."))
    if classes:  # ImageFolder layout: one folder per class, numbered in sorted order
        files, labels = [], []
        for k, name in enumerate(classes):
            found = _images_in(path / name, recursive=True)
            files += found
            labels += [k] * len(found)
    else:
        files, labels = _images_in(path, recursive=False), None
    if not files:
        raise InputError(f"{path}: the folder holds no images ({', '.join(IMAGE_SUFFIXES[:4])}, ...): put images in "
                         "it, or one folder of images per class")
    return ImageItems(files, labels, shape[1:], str(path), mean, std)


def _images_in(folder: Path, recursive: bool) -> list:
    found = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p for p in found if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _load_text(path: Path, example_inputs: tuple, tokenizer, model) -> TensorItems:
    try:
        lines = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines()]
    except UnicodeDecodeError as e:
        raise InputError(f"{path}: is not UTF-8 text ({e}): give a text file with one item per line") from e
    lines = [ln for ln in lines if ln]
    if not lines:
        raise InputError(f"{path}: the text file has no non-blank lines: give one item per line")
    if tokenizer is None:
        raise InputError(f"{path}: text needs the model's tokenizer: pass tokenizer= (a Hugging Face tokenizer), "
                         "or on the command line --tokenizer DIR")
    length = int(example_inputs[0].shape[-1])
    encoded = tokenizer(lines, padding="max_length", max_length=length, truncation=True, return_tensors="pt")
    keys = _input_keys(encoded, model, len(example_inputs))
    return TensorItems(tuple(encoded[k] for k in keys), None, str(path))


def _input_keys(encoded, model, n: int) -> list:
    """The tokenizer outputs in the order of the model's positional inputs: by the names of
    forward's parameters where they are tokenizer keys, else input_ids, attention_mask,
    token_type_ids."""
    import inspect
    names = []
    if model is not None:
        names = [p for p in inspect.signature(model.forward).parameters][:n]
    if len(names) == n and all(k in encoded for k in names):
        return names
    order = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in encoded]
    if len(order) < n:
        raise InputError(f"the tokenizer gives {', '.join(encoded.keys())}, and the model takes {n} inputs: give a "
                         "tensor file of the inputs instead")
    return order[:n]


def _load_tensors(path: Path, n_inputs: int) -> TensorItems:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # any failure to read means the same to the user
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise InputError(f"{path}: cannot be read as a tensor file ({type(e).__name__}: {first}): save the "
                         "inputs with torch.save((inputs, labels), path), or give an image folder or text") from e
    parts = [obj] if not isinstance(obj, list) else obj
    inputs, labels = [], []
    for i, part in enumerate(parts):
        x, y = _split_tensors(part, n_inputs, f"{path}" + (f", item {i}" if isinstance(obj, list) else ""))
        inputs.append(x)
        labels.append(y)
    if any((y is None) != (labels[0] is None) for y in labels):
        raise InputError(f"{path}: some items have labels and some do not: give labels for all or none")
    joined = tuple(torch.cat([x[k] for x in inputs]) for k in range(n_inputs)) if inputs else ()
    if not inputs or joined[0].shape[0] == 0:
        raise InputError(f"{path}: the tensor file holds no items: save N >= 1 inputs along dim 0")
    return TensorItems(joined, None if labels[0] is None else torch.cat(labels), str(path))


def _split_tensors(obj, n_inputs: int, what: str):
    """(inputs tuple, labels or None) of one tensor-file entry; each tensor N along dim 0."""
    items = (obj,) if isinstance(obj, torch.Tensor) else obj
    if not isinstance(items, (tuple, list)) or not items or not all(isinstance(t, torch.Tensor) for t in items) \
            or len(items) not in (n_inputs, n_inputs + 1):
        raise InputError(f"{what}: holds {_describe(obj)}, and the model takes {n_inputs} input(s): save a tuple of "
                         "the inputs (each N along dim 0), optionally followed by N integer labels")
    items = tuple(t if t.dim() else t.reshape(1) for t in items)
    labels = items[n_inputs] if len(items) > n_inputs else None
    if labels is not None and (labels.dim() != 1 or labels.is_floating_point() or labels.is_complex()):
        raise InputError(f"{what}: the last tensor, taken as labels, has shape {list(labels.shape)} and dtype "
                         f"{labels.dtype}: labels are N integers, one class index per item")
    counts = {int(t.shape[0]) for t in items}
    if len(counts) != 1:
        raise InputError(f"{what}: its tensors hold {sorted(counts)} items along dim 0: give the same N for every "
                         "input and the labels")
    return items[:n_inputs], None if labels is None else labels.long()

"""benchmark=tinyimagenet: Tiny-ImageNet (200 ImageNet classes, 64x64 JPEGs) from local files, in either layout.

- The release a user downloads (tiny-imagenet-200.zip, extracted): ``words.txt`` (wnid<TAB>words, all of
  WordNet), optional ``wnids.txt``, ``train/<wnid>/images/*.JPEG`` and ``val/images/*.JPEG`` labelled by
  ``val/val_annotations.txt``. The official val set is our test split (the release's test/ has no labels).
- An ImageFolder copy: ``train/<wnid>/``, ``test/<wnid>/`` and
  ``classes.tsv`` (wnid<TAB>words) for the names.

Classes are the sorted wnids (so both layouts give the same label ids and class order for the same wnids); a
class's name is ``"<wnid> <words>"``, e.g. ``"n01443537 goldfish, Carassius auratus"``, or the bare wnid when
no words are listed: readable in results.json and still naming the folder. ``DataConfig.classes`` keeps a subset
of the wnids: a file (one wnid a line), a list shipped here by bare name (``tinyimagenet_100``: the shared
development half) or a comma list.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np

from ..config import DataConfig
from .benchmark import Benchmark
from .decode import image_extensions
from .imagefolder import FolderSpec, FolderSplit, load_imagefolder, scan_tree

TINYIMAGENET = FolderSpec("tinyimagenet", default_root="data/tiny-imagenet-200", num_tasks=10, seed=1993,
                          image_size=112, augment="crop_flip", num_classes=0,  # 200, or a `classes=` subset
                          source="Tiny-ImageNet (Le & Yang, CS231N 2015), tiny-imagenet-200.zip")
RELEASE_LAYOUT = ("the Tiny-ImageNet release (tiny-imagenet-200/: words.txt, train/<wnid>/images/*.JPEG, "
                  "val/images/*.JPEG and val/val_annotations.txt)")
FOLDER_LAYOUT = "an ImageFolder copy (train/<wnid>/*.JPEG, test/<wnid>/*.JPEG, classes.tsv)"
SHIPPED = Path(__file__).parent  # class lists shipped with the package (tinyimagenet_100.txt), by bare name


def load(cfg: DataConfig) -> Benchmark:
    root = Path(cfg.data_root or TINYIMAGENET.default_root).expanduser().resolve()
    if not root.is_dir():
        raise ValueError(f"data_root={root}: no such folder; benchmark=tinyimagenet reads either {RELEASE_LAYOUT} or "
                         f"{FOLDER_LAYOUT}; the data comes from {TINYIMAGENET.source}")
    # A validation split is carved from all of a class's training images, before the cap: then nothing is capped here
    caps = {"train": 0 if cfg.val_fraction > 0 else cfg.max_train_per_class, "test": cfg.max_test_per_class}
    return load_imagefolder(cfg, spec=TINYIMAGENET, scan=partial(scan_tinyimagenet, classes=cfg.classes, caps=caps))


def scan_tinyimagenet(root: Path, spec: FolderSpec, classes: str = "", caps: dict[str, int] | None = None
                      ) -> tuple[list[str], dict[str, FolderSplit]]:
    """Class names and each split's files and labels, in whichever layout ``root`` holds.

    ``caps`` keeps the first N files of each class per split: the catalog's per-class cap keeps exactly those
    same images after loading, so capping here only spares decoding (and caching) the rest.
    """
    caps = caps or {}
    if (root / "tiny-imagenet-200").is_dir():  # data_root may be the folder the zip was extracted into
        root = root / "tiny-imagenet-200"
    # The release also has a test/ folder (unlabelled), so its val annotations decide first.
    if (root / "val" / "val_annotations.txt").is_file():
        names, files, where = _scan_release(root, spec)
    elif (root / "test").is_dir():
        names, files, where = _scan_folder(root, spec)
    else:
        raise ValueError(f"data_root={root}: neither {RELEASE_LAYOUT} nor {FOLDER_LAYOUT}; benchmark={spec.name} "
                         f"reads either; the data comes from {spec.source}")
    wnids = sorted(names)
    if classes:
        wnids = _select(wnids, classes, where)
    splits = {}
    for split in ("train", "test"):
        keep, labels = [], []
        for label, wnid in enumerate(wnids):
            found = files[split].get(wnid, [])
            if not found:
                raise ValueError(f"{root}: class {wnid} has no {split} images (the release's test split is val/); "
                                 f"every class needs images in both splits")
            found = found[: caps.get(split) or None]
            keep += found
            labels += [label] * len(found)
        splits[split] = FolderSplit(keep, np.asarray(labels, dtype=np.int64))
    return [f"{wnid} {names[wnid]}" if names[wnid] else wnid for wnid in wnids], splits


def _scan_release(root: Path, spec: FolderSpec) -> tuple[dict[str, str], dict[str, dict[str, list[Path]]], str]:
    """The release: wnids.txt (else the train/ folders) are the classes; val_annotations.txt labels val/."""
    listed = root / "wnids.txt"
    if listed.is_file():
        wnids, where = _lines(listed), str(listed)
    else:
        wnids, where = sorted(p.name for p in (root / "train").iterdir() if p.is_dir()), str(root / "train")
    words = _read_words(root / "words.txt")
    extensions = image_extensions()
    train = {}
    for wnid in wnids:
        folder = root / "train" / wnid / "images"
        if not folder.is_dir():
            raise ValueError(f"{folder}: missing; {where} lists class {wnid}, expected {RELEASE_LAYOUT}")
        train[wnid] = sorted(p for p in folder.iterdir() if p.suffix.lower() in extensions)  # not *_boxes.txt
    annotations = root / "val" / "val_annotations.txt"
    test: dict[str, list[Path]] = {}
    for number, line in enumerate(annotations.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split()
        at = f"{annotations}:{number}"
        if len(fields) < 2:
            raise ValueError(f"{at}: {line.strip()!r} is not '<file><TAB><wnid>[<TAB>box]'")
        image, wnid = root / "val" / "images" / fields[0], fields[1]
        if wnid not in train:
            raise ValueError(f"{at}: {wnid} is not one of the {len(train)} classes of {where} (no train folder)")
        if not image.is_file():
            raise ValueError(f"{at}: {image} does not exist")
        test.setdefault(wnid, []).append(image)
    # Sorted per class by file name, as the ImageFolder copy lists them, so both layouts cap the same images.
    return ({w: words.get(w, "") for w in wnids}, {"train": train, "test": {w: sorted(f) for w, f in test.items()}},
            where)


def _scan_folder(root: Path, spec: FolderSpec) -> tuple[dict[str, str], dict[str, dict[str, list[Path]]], str]:
    """An ImageFolder copy: scan_tree checks the tree; names come from classes.tsv when present."""
    wnids, splits = scan_tree(root, spec)
    words = _read_words(root / "classes.tsv")
    files = {}
    for split, listing in splits.items():
        files[split] = {wnid: [] for wnid in wnids}
        for path, label in zip(listing.files, listing.labels.tolist()):
            files[split][wnids[label]].append(path)
    return {w: words.get(w, "") for w in wnids}, files, str(root / "train")


def _read_words(path: Path) -> dict[str, str]:
    """wnid<TAB>words lines (words.txt, classes.tsv); a missing file just leaves the wnids as names."""
    if not path.is_file():
        return {}
    pairs = (line.partition("\t") for line in path.read_text(encoding="utf-8").splitlines())
    return {wnid.strip(): words.strip() for wnid, _, words in pairs if wnid.strip()}


def _lines(path: Path) -> list[str]:
    return sorted({line.strip() for line in path.read_text().splitlines() if line.strip()})


def _select(wnids: list[str], classes: str, where: str) -> list[str]:
    """``classes`` as a file, a shipped list's bare name (tinyimagenet_100), else a comma list; sorted."""
    path, shipped = Path(classes).expanduser(), SHIPPED / f"{classes}.txt"
    if path.is_file():
        wanted = _lines(path)
    elif "/" not in classes and shipped.is_file():
        wanted = _lines(shipped)
    else:
        wanted = sorted({name.strip() for name in classes.split(",") if name.strip()})
    unknown = sorted(set(wanted) - set(wnids))
    if not wanted:
        raise ValueError(f"classes={classes}: names no class")
    if unknown:
        raise ValueError(f"classes={classes}: unknown class(es) {', '.join(unknown[:5])}; not among the "
                         f"{len(wnids)} classes of {where} (classes= takes a file of wnids, one a line, a shipped "
                         f"list such as tinyimagenet_100, or a comma list)")
    return wanted

"""benchmark=tinyimagenet: the release layout, the ImageFolder copy, class subsets, errors, the shared dev half."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from slora.config import DataConfig
from slora.data import load_benchmark

# wnid -> (words, colour); sorted wnid order is label order. The third class has no words: its name is the wnid.
CLASSES = {"n01443537": ("goldfish, Carassius auratus", (230, 20, 20)),
           "n01629819": ("European fire salamander, Salamandra salamandra", (20, 220, 20)),
           "n01641577": ("", (20, 20, 230))}
NAMES = ["n01443537 goldfish, Carassius auratus",
         "n01629819 European fire salamander, Salamandra salamandra", "n01641577"]
SHARED = Path(__file__).resolve().parents[1].parent / "shared/data/tinyimagenet-dev"
PER_TRAIN, PER_TEST = 4, 2


def jpeg(path: Path, colour) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (16, 16), colour).save(path, quality=95)


def write_release(root: Path) -> Path:
    """tiny-imagenet-200/ as the zip extracts: words.txt for more of WordNet than the classes, boxes files, and
    val images whose class is only in val_annotations.txt (interleaved, so file order says nothing)."""
    words = ["n00001740\tentity"] + [f"{w}\t{words}" for w, (words, _) in CLASSES.items() if words]
    (root / "val" / "images").mkdir(parents=True)
    (root / "words.txt").write_text("\n".join(words) + "\n")
    (root / "wnids.txt").write_text("\n".join(reversed(CLASSES)) + "\n")  # the release's is not sorted either
    (root / "test" / "images").mkdir(parents=True)  # the release's unlabelled test/ must not be read
    jpeg(root / "test" / "images" / "test_0.JPEG", (0, 0, 0))
    annotations = []
    for c, (wnid, (_, colour)) in enumerate(CLASSES.items()):
        for k in range(PER_TRAIN):
            jpeg(root / "train" / wnid / "images" / f"{wnid}_{k}.JPEG", colour)
        (root / "train" / wnid / f"{wnid}_boxes.txt").write_text(f"{wnid}_0.JPEG\t0\t0\t63\t63\n")
        for i in range(PER_TEST):
            index = i * len(CLASSES) + (len(CLASSES) - 1 - c)
            jpeg(root / "val" / "images" / f"val_{index}.JPEG", colour)
            annotations.append((index, f"val_{index}.JPEG\t{wnid}\t0\t32\t44\t62"))
    (root / "val" / "val_annotations.txt").write_text("\n".join(line for _, line in sorted(annotations)) + "\n")
    return root


def write_folder(root: Path) -> Path:
    for wnid, (_, colour) in CLASSES.items():
        for k in range(PER_TRAIN):
            jpeg(root / "train" / wnid / f"{wnid}_{k}.JPEG", colour)
        for i in range(PER_TEST):
            jpeg(root / "test" / wnid / f"val_{i}.JPEG", colour)
    (root / "classes.tsv").write_text("".join(f"{w}\t{words}\n" for w, (words, _) in CLASSES.items() if words))
    return root


def load(root: Path, cache: Path, **fields):
    fields = {"num_tasks": 1, **fields}
    return load_benchmark(DataConfig(benchmark="tinyimagenet", data_root=str(root), cache_dir=str(cache),
                                     image_size=16, **fields))


def colour_of(images: torch.Tensor) -> list[tuple[int, int, int]]:
    """Each image's dominant colour, rounded to the nearest of CLASSES' (JPEG shifts pixels a little)."""
    centres = images[:, :, 8, 8].tolist()
    palette = [colour for _, colour in CLASSES.values()]
    return [min(palette, key=lambda p: sum(abs(a - b) for a, b in zip(p, pixel))) for pixel in centres]


def check_labels_match_colours(bench) -> None:
    palette = [colour for _, colour in CLASSES.values()]
    for images, labels in ((bench.train_images, bench.train_labels), (bench.test_images, bench.test_labels)):
        expected = [palette[bench.class_order[label]] for label in labels.tolist()]
        assert colour_of(images) == expected


def test_release_layout_names_from_words_txt_and_test_labels_from_val_annotations(tmp_path):
    bench = load(write_release(tmp_path / "tiny-imagenet-200"), tmp_path / "cache")
    assert bench.class_names == NAMES
    assert tuple(bench.train_images.shape) == (3 * PER_TRAIN, 3, 16, 16)
    assert tuple(bench.test_images.shape) == (3 * PER_TEST, 3, 16, 16)  # val/, not the unlabelled test/
    check_labels_match_colours(bench)
    assert bench.augment == "crop_flip"
    # data_root may also be the folder the zip was extracted into.
    assert load(tmp_path, tmp_path / "cache").class_names == NAMES


def test_imagefolder_layout_gives_the_same_classes_order_and_labels_as_the_release(tmp_path):
    folder = load(write_folder(tmp_path / "copy"), tmp_path / "cache", num_tasks=3)
    release = load(write_release(tmp_path / "release"), tmp_path / "cache", num_tasks=3)
    assert folder.class_names == release.class_names == NAMES
    assert folder.class_order == release.class_order and folder.task_sizes == release.task_sizes == [1, 1, 1]
    check_labels_match_colours(folder)
    assert torch.equal(folder.test_labels, release.test_labels)


def test_classes_subset_as_comma_list_or_file_keeps_those_wnids_sorted(tmp_path):
    root = write_release(tmp_path / "release")
    bench = load(root, tmp_path / "cache", classes="n01641577, n01443537")
    assert bench.class_names == [NAMES[0], NAMES[2]]
    assert len(bench.train_labels) == 2 * PER_TRAIN and len(bench.test_labels) == 2 * PER_TEST
    listing = tmp_path / "keep.txt"
    listing.write_text("n01629819\n\nn01641577\n")
    bench = load(write_folder(tmp_path / "copy"), tmp_path / "cache", classes=str(listing))
    assert bench.class_names == NAMES[1:]
    palette = [colour for _, colour in CLASSES.values()][1:]
    assert colour_of(bench.test_images) == [palette[bench.class_order[y]] for y in bench.test_labels.tolist()]


def test_an_unknown_class_in_the_subset_is_named_with_where_classes_were_looked_for(tmp_path):
    root = write_release(tmp_path / "release")
    with pytest.raises(ValueError) as info:
        load(root, tmp_path / "cache", classes="n01443537,n99999999")
    message = str(info.value)
    assert "n99999999" in message and str(root / "wnids.txt") in message and "\n" not in message


def test_classes_on_a_benchmark_without_subsets_is_refused(tmp_path):
    with pytest.raises(ValueError, match="does not take a class subset"):
        load_benchmark(DataConfig(benchmark="digits", classes="n01443537"))


def test_a_folder_in_neither_layout_names_both(tmp_path):
    (tmp_path / "data" / "train").mkdir(parents=True)
    with pytest.raises(ValueError) as info:
        load(tmp_path / "data", tmp_path / "cache")
    message = str(info.value)
    assert str(tmp_path / "data") in message and "val_annotations.txt" in message and "classes.tsv" in message
    assert "tiny-imagenet-200.zip" in message and "\n" not in message


@pytest.mark.parametrize("line, expected", [("val_99.JPEG", "is not '<file>"),
                                            ("val_0.JPEG\tn02000000\t0\t0\t1\t1", "n02000000 is not one of"),
                                            ("val_77.JPEG\tn01443537\t0\t0\t1\t1", "val_77.JPEG does not exist")])
def test_a_bad_val_annotation_names_file_and_line(tmp_path, line, expected):
    root = write_release(tmp_path / "release")
    annotations = root / "val" / "val_annotations.txt"
    lines = annotations.read_text().splitlines()
    annotations.write_text("\n".join(lines[:2] + [line] + lines[2:]) + "\n")
    with pytest.raises(ValueError, match=expected) as info:
        load(root, tmp_path / "cache")
    assert f"{annotations}:3:" in str(info.value) and "\n" not in str(info.value)


def test_a_class_without_val_images_is_named(tmp_path):
    root = write_release(tmp_path / "release")
    annotations = root / "val" / "val_annotations.txt"
    annotations.write_text("".join(f"{line}\n" for line in annotations.read_text().splitlines()
                                   if "n01629819" not in line))
    with pytest.raises(ValueError, match="class n01629819 has no test images"):
        load(root, tmp_path / "cache")


@pytest.mark.skipif(not SHARED.is_dir(), reason=f"the shared Tiny-ImageNet half is not at {SHARED}")
def test_the_shared_development_half_loads_as_100_classes_in_10_tasks(tmp_path):
    shipped = Path(__file__).resolve().parents[1] / "slora/data/tinyimagenet_100.txt"
    assert shipped.read_text().split() == sorted(p.name for p in (SHARED / "train").iterdir() if p.is_dir())
    bench = load_benchmark(DataConfig(benchmark="tinyimagenet", data_root=str(SHARED), classes="tinyimagenet_100",
                                      max_train_per_class=2, max_test_per_class=1, image_size=32,
                                      cache_dir=str(tmp_path / "cache")))
    assert len(bench.class_names) == 100 and bench.task_sizes == [10] * 10
    assert bench.class_names[0] == "n01641577 bullfrog, Rana catesbeiana"
    assert tuple(bench.train_images.shape) == (200, 3, 32, 32) and len(bench.test_labels) == 100


def test_per_class_caps_applied_while_scanning_give_the_catalogs_capped_benchmark(tmp_path):
    """The loader caps before decoding (the shared half would otherwise decode 35,000 files for a quick run)."""
    from slora.data.catalog import _cap_per_class

    root = write_release(tmp_path / "release")
    capped = load(root, tmp_path / "cache", max_train_per_class=2, max_test_per_class=1)
    full = _cap_per_class(load(root, tmp_path / "cache"), 2, 1)
    for key in ("train_images", "train_labels", "test_images", "test_labels"):
        assert torch.equal(getattr(capped, key), getattr(full, key)), key
    assert len(capped.train_labels) == 3 * 2 and len(capped.test_labels) == 3

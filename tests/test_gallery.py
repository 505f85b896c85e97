"""The shipped gallery is valid data, and drop-in folders merge into it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from stylegallery.gallery import (
    DEFAULT_GALLERY,
    EXTRA_ENV,
    FIELDS,
    OPTIONAL_FIELDS,
    ManifestError,
    by_kind,
    extra_folders,
    folders_of,
    groups,
    load_folder,
    load_gallery,
)


MANIFEST = DEFAULT_GALLERY / "manifest.json"


def _entries() -> list[dict]:
    return json.loads(MANIFEST.read_text())["items"]


def _write_image(path: Path, size: tuple[int, int] = (40, 30), colour: int = 128) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size[1], size[0], 3), colour, np.uint8)).save(path)


def _manifest_folder(tmp_path: Path, items: list[dict]) -> Path:
    folder = tmp_path / "g"
    _write_image(folder / "style" / "a.png")
    (folder / "manifest.json").write_text(json.dumps({"version": 1, "items": items}))
    return folder


def _entry(**changes: object) -> dict:
    entry = {"id": "a", "kind": "style", "file": "style/a.png", "thumb": "style/a.png", "title": "A",
             "source": "made in a test", "licence": "CC0", "width": 40, "height": 30}
    return {**entry, **changes}


# ---- the shipped gallery ----------------------------------------------------------------------

def test_shipped_manifest_has_every_field_and_unique_ids():
    entries = _entries()
    assert all(set(FIELDS) <= set(e) <= set(FIELDS) | set(OPTIONAL_FIELDS) for e in entries)
    ids = [e["id"] for e in entries]
    assert len(ids) == len(set(ids))
    assert {e["kind"] for e in entries} == {"content", "style"}


def test_shipped_gallery_has_enough_contents_and_styles():
    items = load_folder(DEFAULT_GALLERY)
    assert len(by_kind(items, "content")) >= 4
    assert len(by_kind(items, "style")) >= 8


@pytest.mark.parametrize("entry", _entries(), ids=lambda e: e["id"])
def test_shipped_entry_opens_at_its_stated_size(entry):
    with Image.open(DEFAULT_GALLERY / entry["file"]) as img:
        img.load()
        assert img.size == (entry["width"], entry["height"])
        assert img.mode == "RGB"
    with Image.open(DEFAULT_GALLERY / entry["thumb"]) as thumb:
        thumb.load()
        assert max(thumb.size) <= 320
        # the thumbnail keeps the image's aspect ratio (within a pixel of rounding)
        assert abs(thumb.size[0] / thumb.size[1] - entry["width"] / entry["height"]) < 0.02
    assert entry["licence"].strip() and entry["source"].strip() and entry["title"].strip()
    if entry["kind"] == "style":
        assert max(entry["width"], entry["height"]) == 512
    else:
        assert max(entry["width"], entry["height"]) <= 768


def test_shipped_gallery_stays_small():
    total = sum(f.stat().st_size for f in DEFAULT_GALLERY.rglob("*") if f.is_file())
    assert total < 8_000_000  # 39 images (10 masterpieces and 12 Kodak photos as JPEG at 512 px) and thumbnails


def test_shipped_styles_differ_from_each_other():
    # the gallery's point is variety: no two styles share a colour signature (mean RGB and its spread)
    stats = []
    for item in by_kind(load_folder(DEFAULT_GALLERY), "style"):
        pixels = np.asarray(Image.open(item.path).convert("RGB"), np.float32).reshape(-1, 3) / 255
        stats.append(np.concatenate([pixels.mean(0), pixels.std(0)]))
    stats = np.array(stats)
    gaps = np.linalg.norm(stats[:, None] - stats[None], axis=-1) + np.eye(len(stats))
    assert gaps.min() > 0.03


# ---- loading and merging ----------------------------------------------------------------------

def test_load_gallery_without_extras_is_the_shipped_gallery():
    items = load_gallery(environ={})
    assert [i.id for i in items] == [e["id"] for e in _entries()]
    assert folders_of(items) == [DEFAULT_GALLERY.resolve()]
    assert all(i.path.is_absolute() and i.path.is_file() and i.thumb.is_file() for i in items)


def test_plain_folder_of_images_is_scanned(tmp_path):
    _write_image(tmp_path / "drop" / "content" / "my_holiday-photo.jpg", (64, 48))
    _write_image(tmp_path / "drop" / "style" / "b.png")
    _write_image(tmp_path / "drop" / "style" / "a.png")
    (tmp_path / "drop" / "style" / "notes.txt").write_text("not an image")
    items = load_folder(tmp_path / "drop")
    assert [(i.kind, i.id) for i in items] == [("content", "content/my_holiday-photo"), ("style", "style/a"),
                                                 ("style", "style/b")]
    assert items[0].title == "My holiday photo"
    assert (items[0].width, items[0].height) == (64, 48)
    assert items[0].thumb == items[0].path
    assert all(i.licence for i in items)


def test_extra_folders_from_env_and_argument_are_merged_in_order(tmp_path):
    _write_image(tmp_path / "one" / "style" / "x.png")
    _write_image(tmp_path / "two" / "content" / "y.png")
    _write_image(tmp_path / "three" / "style" / "z.png")
    env = {EXTRA_ENV: os.pathsep.join([str(tmp_path / "one"), "", str(tmp_path / "two")])}
    assert extra_folders(env) == [tmp_path / "one", tmp_path / "two"]
    items = load_gallery([tmp_path / "three"], environ=env)
    shipped = len(_entries())
    assert [i.id for i in items[shipped:]] == ["style/x", "content/y", "style/z"]
    assert folders_of(items)[1:] == [(tmp_path / d).resolve() for d in ("one", "two", "three")]


def test_same_folder_twice_is_loaded_once(tmp_path):
    _write_image(tmp_path / "one" / "style" / "x.png")
    env = {EXTRA_ENV: str(tmp_path / "one")}
    items = load_gallery([tmp_path / "one", tmp_path / "one"], default=None, environ=env)
    assert [i.id for i in items] == ["style/x"]


def test_clashing_ids_are_qualified_with_the_folder_name(tmp_path):
    entry = _entries()[0]
    folder = tmp_path / "mine"
    _write_image(folder / entry["file"], (entry["width"], entry["height"]))
    (folder / "manifest.json").write_text(json.dumps({"items": [{**entry, "thumb": entry["file"]}]}))
    items = load_gallery([folder], environ={})
    assert items[-1].id == f"mine/{entry['id']}"
    assert len({i.id for i in items}) == len(items)


def test_manifest_may_be_a_bare_list(tmp_path):
    folder = tmp_path / "g"
    _write_image(folder / "style" / "a.png")
    (folder / "manifest.json").write_text(json.dumps([_entry()]))
    assert [i.id for i in load_folder(folder)] == ["a"]


# ---- bad galleries give clear errors ----------------------------------------------------------

@pytest.mark.parametrize(
    ("items", "message"),
    [
        ([{k: v for k, v in _entry().items() if k != "licence"}], "lacks licence"),
        ([_entry(kind="painting")], "kind='painting' is invalid"),
        ([_entry(), _entry(title="again")], "repeated: a"),
        ([_entry(file="style/missing.png")], "does not exist"),
        ([_entry(thumb="../../etc/passwd")], "outside the gallery folder"),
        ([_entry(width=0)], "width=0 must be a positive integer"),
        ([_entry(licence=" ")], "licence=' ' must be a non-empty string"),
        (["just a string"], "must be an object"),
    ],
)
def test_bad_manifest_entries_are_refused(tmp_path, items, message):
    folder = _manifest_folder(tmp_path, items)
    with pytest.raises(ManifestError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_folder(folder)


def test_unparsable_manifest_is_refused(tmp_path):
    folder = tmp_path / "g"
    folder.mkdir()
    (folder / "manifest.json").write_text("{not json")
    with pytest.raises(ManifestError, match="not valid JSON"):
        load_folder(folder)


def test_missing_or_empty_folder_is_refused(tmp_path):
    with pytest.raises(ManifestError, match="does not exist"):
        load_gallery([tmp_path / "nowhere"], environ={})
    (tmp_path / "empty").mkdir()
    with pytest.raises(ManifestError, match="neither manifest.json nor"):
        load_folder(tmp_path / "empty")


def test_unreadable_image_in_drop_in_folder_is_skipped_with_a_warning(tmp_path):
    (tmp_path / "d" / "style").mkdir(parents=True)
    (tmp_path / "d" / "style" / "broken.png").write_bytes(b"not a png")
    Image.new("RGB", (40, 30)).save(tmp_path / "d" / "style" / "fine.png")
    with pytest.warns(UserWarning, match="broken.png: not a readable image"):
        items = load_folder(tmp_path / "d")
    assert [item.path.name for item in items] == ["fine.png"]


def test_a_symlink_out_of_a_drop_in_folder_is_skipped_with_a_warning(tmp_path):
    (tmp_path / "d" / "content").mkdir(parents=True)
    Image.new("RGB", (40, 30)).save(tmp_path / "secret.png")
    Image.new("RGB", (40, 30)).save(tmp_path / "d" / "content" / "mine.png")
    (tmp_path / "d" / "content" / "link.png").symlink_to(tmp_path / "secret.png")
    (tmp_path / "d" / "content" / "inside.png").symlink_to(tmp_path / "d" / "content" / "mine.png")
    with pytest.warns(UserWarning, match="link.png: it links to .*secret.png, outside"):
        items = load_folder(tmp_path / "d")
    assert sorted(item.path.name for item in items) == ["mine.png", "mine.png"]  # the link inside resolves to it


def test_shipped_masterpieces_are_credited_and_come_first():
    items = load_gallery([])
    styles = by_kind(items, "style")
    masterpieces = [i for i in styles if i.group == "Masterpieces"]
    assert len(masterpieces) == 10 and styles[: len(masterpieces)] == masterpieces
    for item in masterpieces:  # title, artist, date and why it is public domain
        assert item.artist and item.date and item.licence.startswith("Public domain (")
        assert item.caption == f"{item.title}, {item.artist}, {item.date}"
    starry = next(i for i in masterpieces if i.id == "starry-night")
    assert (starry.title, starry.artist, starry.date) == ("The Starry Night", "Vincent van Gogh", "1889")
    assert any(i.group == "Rendered styles" for i in styles)  # the project's own styles stay, as a second group
    kodak = [i for i in by_kind(items, "content") if i.group == "Kodak photos"]
    assert len(kodak) == 12 and all("Kodak" in i.licence and "unrestricted" in i.licence for i in kodak)
    assert [name for name, _ in groups(styles)] == ["Masterpieces", "Rendered styles"]


def test_thumbnails_are_small():
    for item in load_gallery([]):
        with Image.open(item.thumb) as thumb:
            assert max(thumb.size) <= 256 and item.thumb.stat().st_size < 60_000, item.id


def test_optional_fields_must_be_strings_and_unknown_fields_are_refused(tmp_path):
    with pytest.raises(ManifestError, match="artist=3 must be a string"):
        load_folder(_manifest_folder(tmp_path, [_entry(artist=3)]))
    with pytest.raises(ManifestError, match="unknown field"):
        load_folder(_manifest_folder(tmp_path / "b", [_entry(painter="x")]))

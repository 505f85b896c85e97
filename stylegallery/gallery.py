"""The curated image gallery: a folder of images described by one manifest.json, plus drop-in folders.

A gallery folder either holds `manifest.json` (written by scripts/make_gallery.py)::

    {"version": 1, "items": [{"id", "kind": "content"|"style", "file", "thumb", "title", "source",
                              "licence", "width", "height", optional "artist", "date", "group"}, ...]}

with `file`/`thumb` relative to the folder (`group` names the row of thumbnails an item is shown in, e.g.
"Masterpieces" or "Rendered styles"; items without one form a group of their own), or simply `content/` and
`style/` subfolders of images (titles come from the file names). Extra folders come from the environment variable
STYLEGALLERY_EXTRA_GALLERY (os.pathsep-separated) or the app's `--gallery DIR` flag.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal


Kind = Literal["content", "style"]

KINDS: tuple[str, ...] = ("content", "style")
FIELDS: tuple[str, ...] = ("id", "kind", "file", "thumb", "title", "source", "licence", "width", "height")
OPTIONAL_FIELDS: tuple[str, ...] = ("artist", "date", "group")
IMAGE_SUFFIXES: frozenset[str] = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"})
EXTRA_ENV = "STYLEGALLERY_EXTRA_GALLERY"
DEFAULT_GALLERY = Path(__file__).resolve().parent.parent / "gallery"
UNSTATED_LICENCE = "not stated (added by the host)"


class ManifestError(ValueError):
    """A gallery folder or its manifest cannot be used."""


@dataclass(frozen=True)
class GalleryItem:
    """One gallery image. Paths are absolute."""

    id: str
    kind: Kind
    path: Path  # the full-size image
    thumb: Path  # a small preview (the image itself when the folder has no thumbnails)
    title: str
    source: str
    licence: str
    width: int
    height: int
    folder: Path  # the gallery folder the item comes from
    artist: str = ""  # the painter, for artworks
    date: str = ""  # when it was made ("1889", "c. 1831")
    group: str = ""  # the row of thumbnails it is shown in ("Masterpieces", "Rendered styles", ...)

    @property
    def caption(self) -> str:
        """Title, artist and date, as the page captions the thumbnail: "The Starry Night, Vincent van Gogh, 1889"."""
        return ", ".join(part for part in (self.title, self.artist, self.date) if part)


def load_folder(folder: str | Path) -> list[GalleryItem]:
    """Items of one gallery folder: from its manifest.json, else from its content/ and style/ subfolders."""
    root = Path(folder).expanduser().resolve()
    if not root.is_dir():
        raise ManifestError(f"gallery folder {str(folder)!r} does not exist: pass a folder with manifest.json "
                            f"or content/ and style/ subfolders")
    if (root / "manifest.json").is_file():
        return _load_manifest(root)
    if (root / "content").is_dir() or (root / "style").is_dir():
        return _scan(root)
    raise ManifestError(f"gallery folder {str(root)!r} has neither manifest.json nor content/ or style/ "
                        f"subfolders: add one of them")


def extra_folders(environ: Mapping[str, str] = os.environ) -> list[Path]:
    """Folders listed in STYLEGALLERY_EXTRA_GALLERY (os.pathsep-separated; empty entries ignored)."""
    return [Path(p) for p in environ.get(EXTRA_ENV, "").split(os.pathsep) if p.strip()]


def load_gallery(
    extra: Iterable[str | Path] = (),
    *,
    default: str | Path | None = DEFAULT_GALLERY,
    environ: Mapping[str, str] = os.environ,
) -> list[GalleryItem]:
    """The shipped gallery, then the folders of STYLEGALLERY_EXTRA_GALLERY, then `extra`, merged.

    An id that is already taken is qualified with its folder's name ("<folder>/<id>") so that drop-in
    folders never clash with the shipped gallery.
    """
    folders = ([Path(default)] if default is not None else []) + extra_folders(environ) + [Path(p) for p in extra]
    items: list[GalleryItem] = []
    seen_folders: set[Path] = set()
    for folder in folders:
        resolved = Path(folder).expanduser().resolve()
        if resolved in seen_folders:
            continue
        seen_folders.add(resolved)
        items.extend(load_folder(resolved))
    return _unique_ids(items)


def folders_of(items: Sequence[GalleryItem]) -> list[Path]:
    """The distinct gallery folders the items come from, in order (what a server must be allowed to read)."""
    return list(dict.fromkeys(item.folder for item in items))


def by_kind(items: Sequence[GalleryItem], kind: Kind) -> list[GalleryItem]:
    return [item for item in items if item.kind == kind]


def groups(items: Sequence[GalleryItem]) -> list[tuple[str, list[GalleryItem]]]:
    """The items by group, groups in order of first appearance (an item without a group joins "More")."""
    out: dict[str, list[GalleryItem]] = {}
    for item in items:
        out.setdefault(item.group or "More", []).append(item)
    return list(out.items())


# ----------------------------------------------------------------------------------------------

def _load_manifest(root: Path) -> list[GalleryItem]:
    where = root / "manifest.json"
    try:
        data = json.loads(where.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ManifestError(f"{where} is not valid JSON ({exc}): regenerate it with scripts/make_gallery.py") from None
    entries = data.get("items") if isinstance(data, dict) else data
    if not isinstance(entries, list):
        raise ManifestError(f"{where} must hold a list of entries or {{\"items\": [...]}}, got {type(data).__name__}")
    items = [_parse_entry(root, where, i, entry) for i, entry in enumerate(entries)]
    ids = [item.id for item in items]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise ManifestError(f"{where}: ids must be unique, repeated: {', '.join(duplicates)}")
    return items


def _parse_entry(root: Path, where: Path, index: int, entry: Any) -> GalleryItem:
    if not isinstance(entry, dict):
        raise ManifestError(f"{where}: entry {index} must be an object, got {type(entry).__name__}")
    missing = [f for f in FIELDS if f not in entry]
    if missing:
        raise ManifestError(f"{where}: entry {index} ({entry.get('id', '?')}) lacks {', '.join(missing)}")
    label = f"{where}: entry {index} ({entry['id']!r})"
    for name in ("id", "file", "thumb", "title", "source", "licence"):
        if not isinstance(entry[name], str) or not entry[name].strip():
            raise ManifestError(f"{label}: {name}={entry[name]!r} must be a non-empty string")
    for name in OPTIONAL_FIELDS:
        if name in entry and not isinstance(entry[name], str):
            raise ManifestError(f"{label}: {name}={entry[name]!r} must be a string")
    unknown = sorted(set(entry) - set(FIELDS) - set(OPTIONAL_FIELDS))
    if unknown:
        raise ManifestError(f"{label}: unknown field(s) {', '.join(unknown)}; known: "
                            f"{', '.join(FIELDS + OPTIONAL_FIELDS)}")
    if entry["kind"] not in KINDS:
        raise ManifestError(f"{label}: kind={entry['kind']!r} is invalid: expected 'content' or 'style'")
    for name in ("width", "height"):
        value = entry[name]
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ManifestError(f"{label}: {name}={value!r} must be a positive integer")
    return GalleryItem(
        id=entry["id"], kind=entry["kind"], path=_inside(root, entry["file"], label),
        thumb=_inside(root, entry["thumb"], label), title=entry["title"], source=entry["source"],
        licence=entry["licence"], width=entry["width"], height=entry["height"], folder=root,
        **{name: entry[name].strip() for name in OPTIONAL_FIELDS if name in entry},
    )


def _inside(root: Path, relative: str, label: str) -> Path:
    """The existing file `relative` under `root`; paths escaping the folder are refused (the app serves it)."""
    path = (root / relative).resolve()
    if not path.is_relative_to(root):
        raise ManifestError(f"{label}: {relative!r} points outside the gallery folder: use a path inside {root}")
    if not path.is_file():
        raise ManifestError(f"{label}: file {relative!r} does not exist in {root}")
    return path


def _scan(root: Path) -> list[GalleryItem]:
    from PIL import Image, UnidentifiedImageError  # only drop-in folders need to read image headers

    items = []
    for kind in KINDS:
        sub = root / kind
        if not sub.is_dir():
            continue
        for path in sorted(p for p in sub.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()):
            if not path.resolve().is_relative_to(root):  # a symlink out of the folder: the app would serve its target
                warnings.warn(f"gallery: skipped {path}: it links to {path.resolve()}, outside {root} (copy the "
                              "image into the folder instead)", stacklevel=2)
                continue
            try:
                with Image.open(path) as img:
                    width, height = img.size
            except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as exc:
                reason = " ".join(str(exc).split())[:200] or type(exc).__name__
                warnings.warn(f"gallery: skipped {path}: not a readable image ({reason}); remove it or replace it",
                              stacklevel=2)
                continue
            items.append(GalleryItem(
                id=f"{kind}/{path.stem}", kind=kind, path=path.resolve(), thumb=path.resolve(),  # type: ignore[arg-type]
                title=_title(path.stem), source=f"{root.name}/{kind}/{path.name}", licence=UNSTATED_LICENCE,
                width=width, height=height, folder=root,
            ))
    return items


def _title(stem: str) -> str:
    """"van_gogh-starry night" -> "Van gogh starry night"."""
    text = " ".join(stem.replace("_", " ").replace("-", " ").split()) or stem
    return text[:1].upper() + text[1:]


def _unique_ids(items: list[GalleryItem]) -> list[GalleryItem]:
    taken: set[str] = set()
    out = []
    for item in items:
        new_id = item.id
        if new_id in taken:
            new_id = f"{item.folder.name}/{item.id}"
        n = 2
        while new_id in taken:
            new_id, n = f"{item.folder.name}/{item.id}-{n}", n + 1
        taken.add(new_id)
        out.append(item if new_id == item.id else replace(item, id=new_id))
    return out

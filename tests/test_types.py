"""The plain data between the stages and out of the pipeline: the matches document names every style's file."""

from __future__ import annotations

import json

import numpy as np

from stylegallery.config import Settings
from stylegallery.types import ContentSegmented, Done, Match, Matched, Preview, Result, Segmented


def test_the_matches_document_names_each_style_file_beside_its_index() -> None:
    image = np.zeros((16, 24, 3), np.float32)
    labels = np.zeros((2, 3), np.int32)
    labels[:, 2] = 1
    terms = {"statistical": 0.1, "semantic": 0.2, "positional": 0.3}
    result = Result(image, image, [image, image], labels, [labels, labels],
                    [Match(0, 1, 0, 0.5, terms), Match(1, 0, 1, 0.25, terms, "user")], {"total": 1.23456},
                    "classic", "test", Settings(), style_names=["starry.jpg", "wave.png"], content_name="photo.jpg")
    doc = json.loads(json.dumps(result.matches_json()))
    assert doc["content"] == "photo.jpg" and doc["content_regions"] == 2
    assert doc["styles"] == [{"style_image": 0, "file": "starry.jpg"}, {"style_image": 1, "file": "wave.png"}]
    assert doc["matches"][1] == {"content_region": 1, "style_image": 0, "style_region": 1, "score": 0.25,
                                 "terms": terms, "source": "user"}
    assert doc["timings"] == {"total": 1.2346}
    assert result.to_pil().size == (24, 16)


def test_the_events_are_plain_data_importable_from_the_pipeline_too() -> None:
    from stylegallery import pipeline

    for event in (ContentSegmented, Segmented, Matched, Preview, Done, Result):
        assert getattr(pipeline, event.__name__) is event
    assert Matched([], {}).notes == ()

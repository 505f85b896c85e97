"""stylegallery/web/render.py: the region-choice codec in the page's numbers, and the page's text for a run."""

from __future__ import annotations

import errno
import os

import gradio as gr
import pytest

from stylegallery.web import render
from stylegallery.web.hosting import CannotSave


def test_parse_overrides_turns_page_numbers_into_library_indices():
    assert render.parse_overrides({"2": [1, 3], "4": None}) == {1: (0, 2)}
    assert render.parse_overrides(None) == {}
    for bad in ({"two": [1, 3]}, {"2": [1]}, {"2": [1, 2, 3]}, {"2": "13"}, ["2"]):
        with pytest.raises(gr.Error, match="malformed"):
            render.parse_overrides(bad)
    with pytest.raises(gr.Error, match="R0 → Style 1 · region 1 is invalid: regions and styles are numbered from 1"):
        render.parse_overrides({"0": [1, 1]})


@pytest.mark.parametrize(("bad", "message"), [
    ('{"2": [1, "C:\\x"]}', "Region choices are malformed: got a string, expected e.g. {\"2\": [1, 3]}: region R2 "
                              "painted like region 3 of style 1."),
    ({"2": "13"}, "Region choices are malformed: region 2 takes [style, style region] (two whole numbers), got a "
                  "string; expected e.g."),
    ({"2": [1.5, 3]}, "region 2 takes [style, style region] (two whole numbers), got a list of 2 items;"),
    ({"2": [1]}, "got a list of 1 item;"),
    ({"R\\2\x00": [1, 3]}, "Region choices are malformed: the key R\\2 is not a region number; expected e.g."),
    (["2"], "Region choices are malformed: got a list of 1 item, expected"),
])
def test_malformed_region_choices_are_described_not_echoed(bad, message):
    with pytest.raises(gr.Error) as info:
        render.parse_overrides(bad)
    assert message in info.value.message
    assert "'" not in info.value.message and "\\\\" not in info.value.message


def _override_error(region, target, content_regions=(0, 1), style_regions=((0, 1, 2), (0, 1))):
    from stylegallery.errors import OverrideError

    return OverrideError("0-based library text", region, target, list(content_regions),
                         [list(r) for r in style_regions])


@pytest.mark.parametrize(("region", "target", "message"), [
    (3, (0, 0), "Your choice for region R4 cannot be used: this run found regions R1, R2; choose again"),
    (1, (4, 0), "Your choice R2 → Style 5 cannot be used: this run has 2 style images; choose again"),
    (0, (1, 2), "Your choice R1 → Style 2 · region 3 cannot be used: Style 2 has regions 1, 2; choose again"),
])
def test_override_errors_use_the_page_numbers(region, target, message):
    assert render.override_message(_override_error(region, target)).startswith(message)


def test_an_update_names_every_output_and_skips_the_others():
    update = render.out(seed=3, status="x")
    assert len(update) == len(render.OUTPUTS) and update[0] == 3 and update[1] == "x"
    assert all(value == gr.skip() for value in update[2:])


def test_a_failed_run_ends_with_a_failed_status_line_then_the_error():
    def run():
        yield render.out(status="working")
        raise gr.Error("Choose <one> style")

    updates = []
    with pytest.raises(gr.Error, match="Choose <one> style"):
        for update in render.failures_said(run()):
            updates.append(update)
    status = updates[-1][render.OUTPUTS.index("status")]
    assert "sg-failed" in status and "<b>Failed:</b> Choose &lt;one&gt; style" in status


def test_run_errors_are_worded_for_the_page():
    full = render.page_error(CannotSave(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))), [])
    assert full.message == "The server's disk is full, so this run's pictures could not be saved; try again later."
    denied = render.page_error(CannotSave(OSError(errno.EACCES, os.strerror(errno.EACCES))), [])
    assert denied.message == "The server could not save this run's pictures (Permission denied); try again later."
    assert render.page_error(_override_error(3, (0, 0)), []).message.startswith("Your choice for region R4")
    named = render.page_error(ValueError("style image 2 '/tmp/gradio/ab12/cat.png' is not an image"),
                              ["/tmp/gradio/ab12/cat.png"])
    assert named.message == "style image 2 'cat.png' is not an image"


def test_a_target_is_recorded_in_page_numbers_and_shown_back():
    overrides, text = render.choose_target({"1": [1, 2]}, "R4", "Style 1 · region 1")
    assert overrides == {"1": [1, 2], "4": [1, 1]}
    assert text == "Your choices (applied by **Regenerate**): R1 → Style 1 · region 2, R4 → Style 1 · region 1"
    assert render.show_choice(overrides, "R4") == "Style 1 · region 1"
    assert render.show_choice(overrides, "R2") == "auto"


def test_a_regions_strength_is_recorded_in_page_numbers_and_shown_back():
    strengths, text = render.choose_strength({"1": 0.2}, "R3", 0.5, {"1": [1, 2]})
    assert strengths == {"1": 0.2, "3": 0.5}
    assert text == ("Your choices (applied by **Regenerate**): R1 → Style 1 · region 2, R1 at strength 0.20, "
                    "R3 at strength 0.50")
    assert render.strength_of(strengths, "R3", 1.0) == {"__type__": "update", "value": 0.5, "interactive": True}
    assert render.strength_of(strengths, "R2", 0.8)["value"] == 0.8  # a region left alone: the Style strength
    assert render.strength_of(strengths, None, 0.8)["interactive"] is False  # no region picked: nothing to set
    _, text = render.choose_target({}, "R2", "Style 1 · region 1", None, strengths)  # a target keeps the strengths
    assert "R2 → Style 1 · region 1" in text and "R3 at strength 0.50" in text


def test_styles_are_named_in_the_dropdown_and_its_choices_parse_back():
    styles = [("/g/starry.jpg", "The Starry Night"), ("/g/wave.jpg", "The Great Wave · region 7 (a title)")]
    assert render.style_label(1, render.titles(styles)) == "2. The Great Wave · region 7 (a title)"
    choice = render.target_label(1, 2, render.titles(styles))
    assert choice == "2. The Great Wave · region 7 (a title) · region 3"
    overrides, text = render.choose_target({}, "R1", choice, render.titles(styles))
    assert overrides == {"1": [2, 3]}
    assert "R1 → 2. The Great Wave · region 7 (a title) · region 3" in text
    assert render.show_choice(overrides, "R1", render.titles(styles)) == choice  # the same words come back
    assert render.choose_target({}, "R1", "Style 2 · region 3")[0] == {"1": [2, 3]}  # the older wording


def test_all_automatic_resets_the_table_and_marks_a_chosen_result_stale():
    table = [["R1", "1. A", "region 2", 0.5, "you"], ["R2", "2. B", "region 1", 0.2, "auto"]]
    overrides, text, target, rows, said, strengths, slider = render.all_automatic(table, {"2": 0.1}, 0.7)
    assert overrides == {} and strengths == {} and target == "auto" and "none yet" in text
    assert slider["value"] == 0.7  # the region's slider back at the Style strength
    assert [r[4] for r in rows] == ["auto", "auto"] and rows[0][:4] == table[0][:4]
    assert "sg-stale" in said and "still shows your earlier choices" in said
    assert "sg-stale" not in render.all_automatic([["R1", "1. A", "region 2", 0.5, "auto"]])[4]
    assert "sg-stale" in render.all_automatic([["R1", "1. A", "region 2", 0.5, "auto"]], {"1": 0.3})[4]


def test_an_unreadable_or_tiny_upload_is_refused_with_its_reason(tmp_path, caplog):
    from PIL import Image

    text = tmp_path / "notes.png"
    text.write_text("not a picture")
    tiny = tmp_path / "tiny.png"
    Image.new("RGB", (8, 8)).save(tiny)
    good = tmp_path / "good.png"
    Image.new("RGB", (64, 48)).save(good)
    kept, why = render.take_uploads([(str(good), "good.png"), (str(text), "notes.png"), (str(tiny), "tiny.png")], 5)
    assert kept == [(str(good), "good.png")]
    assert "notes.png is not an image in a supported format" in why and "tiny.png is 8x8 px: too small" in why
    assert str(tmp_path) not in why  # the server's path is never shown
    said = render.refused(why)
    assert "Not added" in said and len(caplog.records) == 1 and "\n" not in caplog.records[0].getMessage()


def test_a_page_error_logs_one_line_and_no_traceback(caplog):
    def failing():
        yield render.out(seed=1)
        raise gr.Error("Choose at least one style image.")

    updates = render.failures_said(failing())
    next(updates)
    with pytest.raises(gr.Error) as info:
        list(updates)
    assert info.value.print_exception is False  # gradio's queue prints a traceback only when this is set
    assert [r.getMessage() for r in caplog.records] == ["run refused: Choose at least one style image."]

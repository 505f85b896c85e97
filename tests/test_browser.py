"""The page in a real browser: Debian chromium driven by Playwright against `python app.py`."""

from __future__ import annotations

import collections
import re
from pathlib import Path

import pytest

from tests.fixtures import AppServer


pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]
RUN_TIMEOUT_MS = 180_000  # a classic run at 256 px takes seconds; a busy machine can be much slower

if not Path(CHROMIUM).exists():
    pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")


@pytest.fixture(scope="module")
def url():
    """`python app.py` in a subprocess, exactly as a user starts it (offline, on a free port)."""
    with AppServer() as server:
        yield server.url + "/"


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


DESKTOP, PHONE = {"width": 1366, "height": 768}, {"width": 390, "height": 844}
PICTURES = ("#region-map", "#match-figure", "#result")  # the three result pictures, in their row


@pytest.fixture
def page(browser, url):
    context = browser.new_context(viewport=DESKTOP)
    page = context.new_page()
    _open(page, url)
    yield page
    context.close()


def _pick(page, gallery: str, index: int) -> None:
    """Click a thumbnail and wait until its chosen mark flips: gradio ignores a click on a gallery whose last click
    is still being handled (trigger_mode "once"), so a second pick within ~0.2 s would be lost. `gallery` is a CSS
    selector of the visible tab's thumbnails (".sg-content", ".sg-style")."""
    item = page.locator(f"{gallery} .thumbnail-item").nth(index)
    chosen = re.compile(r"\bsg-chosen\b")
    was_chosen = chosen.search(item.get_attribute("class") or "") is not None
    item.click()
    if was_chosen:
        sync_api.expect(item).not_to_have_class(chosen)
    else:
        sync_api.expect(item).to_have_class(chosen)


def _set_size(page, px: int) -> None:
    """Open the Advanced settings and type a working size (a small one keeps the test quick), then close them."""
    page.get_by_text("Advanced settings").click()
    box = page.locator("#advanced input[type=number]").first  # the working-size slider's number box
    box.wait_for(state="visible")
    slider = page.locator("#advanced input[type=range]").first
    for _ in range(3):  # the number box sometimes drops the first edit while the accordion is still opening
        box.fill(str(px))
        box.press("Enter")
        box.press("Tab")
        try:
            sync_api.expect(slider).to_have_value(str(px), timeout=3000)
            break
        except AssertionError:
            continue
    page.get_by_text("Advanced settings").click()


def _box(page, selector: str) -> dict:
    box = page.locator(selector).first.bounding_box()
    assert box is not None, f"{selector} is not shown"
    return box


def _overlap(a: dict, b: dict) -> float:
    """The area two bounding boxes share, ignoring a shared edge of up to 1.5 px (sub-pixel layout)."""
    w = min(a["x"] + a["width"], b["x"] + b["width"]) - max(a["x"], b["x"])
    h = min(a["y"] + a["height"], b["y"] + b["height"]) - max(a["y"], b["y"])
    return w * h if w > 1.5 and h > 1.5 else 0.0


def _in_view(box: dict, viewport: dict) -> bool:
    return box["y"] >= -1 and box["y"] + box["height"] <= viewport["height"] + 1 and box["x"] >= -1 \
        and box["x"] + box["width"] <= viewport["width"] + 1


def _nothing_covered(page, what: str) -> None:
    """Each picture's title and toolbar (download, full screen) cover neither the picture nor each other; the
    buttons, the status line and the pictures do not overlap."""
    for picture in ("#content-image", *PICTURES):
        image = _box(page, f"{picture} img")
        label = _box(page, f"{picture} label[data-testid=block-label]")
        assert _overlap(label, image) < 1, f"{what}: {picture}'s title covers the picture"
        for button in page.locator(f"{picture} .icon-button-wrapper button").all():
            tool = button.bounding_box()
            if tool is None:
                continue
            assert _overlap(tool, image) < 1, f"{what}: {picture}'s toolbar covers the picture"
            assert _overlap(tool, label) < 1, f"{what}: {picture}'s toolbar covers its title"
    boxes = {s: _box(page, s) for s in ("#generate", "#stop", "#status", *(f"{p} img" for p in PICTURES))}
    for i, (a, box_a) in enumerate(boxes.items()):
        for b, box_b in list(boxes.items())[i + 1:]:
            assert _overlap(box_a, box_b) < 1, f"{what}: {a} and {b} overlap"


def _open(page, url: str) -> None:
    """The page, loaded and built: gradio's heartbeat keeps a connection open, so "networkidle" may never come."""
    page.goto(url, wait_until="load", timeout=120_000)  # a busy machine loads slowly
    page.wait_for_selector("#generate", state="visible", timeout=120_000)


def _run(page, content: int = 1, styles: tuple[int, ...] = (0, 3)) -> None:
    """Pick a Kodak photo and masterpieces (The Starry Night, Mona Lisa), run at 256 px, wait for the end."""
    _pick(page, ".sg-content", content)
    for index in styles:
        _pick(page, ".sg-style", index)
    sync_api.expect(page.locator("#chosen-styles .thumbnail-item")).to_have_count(len(styles))
    sync_api.expect(page.locator("#content-image img")).to_be_visible()
    _set_size(page, 256)
    page.click("#generate")
    for selector in ("#region-map img", "#match-figure img", "#result img"):
        page.wait_for_selector(selector, state="visible", timeout=RUN_TIMEOUT_MS)
    sync_api.expect(page.locator("#status")).to_contain_text("done in", timeout=RUN_TIMEOUT_MS)
    page.wait_for_selector("#dl-result:not([disabled])", timeout=RUN_TIMEOUT_MS)
    page.wait_for_timeout(500)  # the last pictures' requests settle (gradio's heartbeat keeps one connection open)


def _download_size(page, button: str) -> tuple[int, int]:
    from PIL import Image

    with page.expect_download() as info:
        page.click(button)
    with Image.open(info.value.path()) as picture:
        return picture.size


def test_one_screen_at_1366x768_with_names_and_talk_panels(page):
    ARTIFACTS.mkdir(exist_ok=True)
    # Before a run: the pickers and Generate are on the first screen, "Masterpieces" is the first style tab.
    for selector in ("#generate", ".sg-content .thumbnail-item", ".sg-style .thumbnail-item", "#content-image",
                     "#chosen-styles"):
        assert _in_view(_box(page, selector), DESKTOP), f"{selector} is below the fold at 1366x768"
    sync_api.expect(page.locator(".sg-tabs button[role=tab]").filter(has_text="Masterpieces")).to_have_count(1)
    assert page.locator(".sg-style .thumbnail-item").first.inner_text().strip() == "The Starry Night"
    page.screenshot(path=str(ARTIFACTS / "browser_1366_start.png"))

    fetched = collections.Counter()  # the run's pictures, by address
    page.on("request", lambda request: fetched.update([request.url]) if "stylegallery-runs" in request.url else None)
    _run(page)
    assert len(fetched) >= 4 and max(fetched.values()) == 1, fetched  # ...and the browser fetches each one once
    height = page.evaluate("() => document.documentElement.scrollHeight")
    assert height <= 2 * DESKTOP["height"], f"the page is {height} px tall after a run (two screens: 1536)"
    # The region map, the matches and the result are visible together (scrolled to).
    page.locator("#region-map").scroll_into_view_if_needed()
    for picture in PICTURES:
        box = _box(page, f"{picture} img")
        assert box["width"] > 200 and box["height"] > 150 and _in_view(box, DESKTOP), f"{picture} at {box}"
    _nothing_covered(page, "1366x768")
    page.screenshot(path=str(ARTIFACTS / "browser_1366_run.png"))
    page.screenshot(path=str(ARTIFACTS / "browser_1366_full.png"), full_page=True)

    # Names everywhere: the engine's kind of regions, the styles' titles, the result's size.
    from stylegallery.engines import ENGINES
    from stylegallery.request import Request, plan

    engine = plan(Request()).engine  # the engine auto paints with here
    sync_api.expect(page.locator("#region-map")).to_contain_text(ENGINES[engine].regions_title)
    sync_api.expect(page.locator("#match-table")).to_contain_text("1. The Starry Night")
    sync_api.expect(page.locator("#match-table")).to_contain_text("2. Mona Lisa")
    sync_api.expect(page.locator("#style-regions")).to_contain_text("2. Mona Lisa")
    natural = page.evaluate("() => { const i = document.querySelector('#result img');"
                            " return [i.naturalWidth, i.naturalHeight]; }")
    # the working size, or the photo's own size (512 px here) for an engine that paints at it, as the page says
    assert max(natural) in (256, 512)
    sync_api.expect(page.locator("#status")).to_contain_text(re.compile(rf"are {max(natural)} × \d+ px"))
    sync_api.expect(page.locator("#dl-result")).to_contain_text(re.compile(rf"Result PNG \({max(natural)} × \d+ px\)"))
    assert _download_size(page, "#dl-panel") == (1920, 1080)  # the talk panel, 16:9
    assert _download_size(page, "#dl-panel43") == (1440, 1080)  # and its 4:3 variant

    # Personalise: the choice applies on Regenerate, which says it repaints (no "segmenting the styles").
    sync_api.expect(page.locator("#target-pick")).to_contain_text("takes its look from")
    sync_api.expect(page.locator("#overrides-text")).to_contain_text("applied by Regenerate")
    statuses = []
    page.expose_function("sgStatus", lambda text: statuses.append(text))
    page.evaluate("() => new MutationObserver(() => window.sgStatus(document.querySelector('#status').innerText))"
                  ".observe(document.querySelector('#status'), {childList: true, subtree: true, characterData: true})")
    _choose(page, "region-pick", "R2")
    page.locator("#target-pick input").click()
    options = [o.strip() for o in page.get_by_role("option").all_inner_texts()]
    chosen = next((o for o in options if re.fullmatch(r"2\. Mona Lisa.* · region 1", o)), None)
    assert chosen, f"no target names Mona Lisa's region 1: {options}"
    page.get_by_role("option", name=chosen, exact=True).click()
    sync_api.expect(page.locator("#overrides-text")).to_contain_text(f"R2 → {chosen}")
    page.click("#regenerate")
    chosen_row = re.compile(r"R2\s*2\. Mona Lisa[^\n]*\s*region 1\s*-?[0-9.]+\s*you")  # the table's cells, in order
    sync_api.expect(page.locator("#match-table")).to_contain_text(chosen_row, timeout=RUN_TIMEOUT_MS)
    sync_api.expect(page.locator("#status")).to_contain_text("done in", timeout=RUN_TIMEOUT_MS)
    assert any("repainting with your region choices" in s for s in statuses), statuses
    assert not any("segmenting the styles" in s for s in statuses), statuses
    sync_api.expect(page.locator("#region-pick input")).to_have_value("R2")
    sync_api.expect(page.locator("#target-pick input")).to_have_value(chosen)
    _choose(page, "region-pick", "R1")  # the target follows the region shown
    sync_api.expect(page.locator("#target-pick input")).to_have_value("auto")

    # "All regions automatic": the table says auto everywhere, and the result is marked as not showing that yet.
    page.click("#reset")
    sync_api.expect(page.locator("#match-table")).not_to_contain_text("you")
    sync_api.expect(page.locator("#status")).to_contain_text("still shows your earlier choices")
    sync_api.expect(page.locator("#target-pick input")).to_have_value("auto")
    page.screenshot(path=str(ARTIFACTS / "browser_1366_reset.png"))

    # A setting that changes the regions clears the choices, so a stale one cannot break the next run.
    page.get_by_text("Advanced settings").click()
    k_max = page.locator("#k-max input[type=number]")
    k_max.fill("3")
    k_max.press("Enter")
    sync_api.expect(page.locator("#region-pick input")).to_have_value("")


def _choose(page, dropdown: str, option: str) -> None:
    page.locator(f"#{dropdown} input").click()
    page.get_by_role("option", name=option, exact=True).click()


def test_no_style_chosen_shows_an_error_in_the_page(page):
    _pick(page, ".sg-content", 0)
    sync_api.expect(page.locator("#content-image img")).to_be_visible()  # the pick has reached the page
    page.click("#generate")
    sync_api.expect(page.locator("#status")).to_contain_text("Failed: Choose at least one style image",
                                                             timeout=30_000)
    sync_api.expect(page.locator("#region-map img")).to_have_count(0)


def test_clicking_a_chosen_style_again_removes_it(page):
    _pick(page, ".sg-style", 2)
    sync_api.expect(page.locator("#chosen-styles .thumbnail-item")).to_have_count(1)
    _pick(page, ".sg-style", 2)
    sync_api.expect(page.locator("#chosen-styles .thumbnail-item")).to_have_count(0)
    sync_api.expect(page.locator(".sg-style .thumbnail-item.sg-chosen")).to_have_count(0)


def _assert_fits(page, what: str) -> None:
    width, inner = page.evaluate("() => [document.documentElement.scrollWidth, innerWidth]")
    assert width <= inner + 1, f"{what}: the page is {width} px wide in a {inner} px viewport"
    box = page.locator("#generate").bounding_box()
    assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= inner + 1, f"{what}: Generate is at {box}"
    thumbs = page.locator(".sg-style .thumbnail-item")
    assert thumbs.count() >= 10
    for i in range(thumbs.count()):  # no style thumbnail of the open tab is off-screen sideways
        t = thumbs.nth(i).bounding_box()
        assert t is None or (t["x"] >= 0 and t["x"] + t["width"] <= inner + 1), f"{what}: style {i + 1} at {t}"


def test_a_phone_sized_screen_covers_and_cuts_off_nothing(browser, url):
    context = browser.new_context(viewport=PHONE)
    page = context.new_page()
    try:
        _open(page, url)
        _assert_fits(page, "before a run")
        # Before a run: words where the pictures will be, not empty boxes with broken-image icons.
        sync_api.expect(page.locator("#style-regions")).to_be_hidden()
        sync_api.expect(page.locator("#region-map .empty .icon")).to_be_hidden()
        words = page.evaluate("() => getComputedStyle(document.querySelector('#region-map .empty'), '::after')"
                              ".content")
        assert "regions appear here" in words
        _run(page, styles=(0,))
        _assert_fits(page, "after a run")
        for picture in PICTURES:
            page.locator(picture).scroll_into_view_if_needed()
            _nothing_covered_one(page, picture)
        table = page.locator("#match-table")
        table.scroll_into_view_if_needed()
        box = _box(page, "#match-table")
        assert box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"] + 1, f"the table is cut off: {box}"
        hidden = page.evaluate("() => Array.from(document.querySelectorAll('#match-table .table-wrap, "
                               "#match-table .virtual-table-viewport')).map(e => e.scrollWidth - e.clientWidth)")
        assert hidden and max(hidden) <= 1, f"the table hides {max(hidden)} px on the right"
        for header in page.locator("#match-table th").all():  # every column's title is whole, on at most 2 lines
            cell = header.bounding_box()
            assert cell is not None and cell["height"] < 60, f"a header is {cell}: its title breaks letter by letter"
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "browser_390_full.png"), full_page=True)
        page.locator("#match-figure").scroll_into_view_if_needed()
        page.screenshot(path=str(ARTIFACTS / "browser_390_matches.png"))
    finally:
        context.close()


def _nothing_covered_one(page, picture: str) -> None:
    image, label = _box(page, f"{picture} img"), _box(page, f"{picture} label[data-testid=block-label]")
    assert _overlap(label, image) < 1, f"{picture}'s title covers the picture"
    for button in page.locator(f"{picture} .icon-button-wrapper button").all():
        tool = button.bounding_box()
        if tool is not None:
            assert _overlap(tool, image) < 1 and _overlap(tool, label) < 1, f"{picture}'s toolbar covers it"


def test_a_bad_file_is_refused_at_upload_with_the_reason_in_the_status_line(page, tmp_path):
    fake = tmp_path / "holiday.png"
    fake.write_text("this is a text file, renamed .png")
    page.locator("#content-image input[type=file]").set_input_files(str(fake))
    sync_api.expect(page.locator("#status")).to_contain_text("holiday.png is not an image", timeout=20_000)
    sync_api.expect(page.locator("#content-image img")).to_have_count(0)  # nothing added
    from PIL import Image

    tiny = tmp_path / "icon.png"
    Image.new("RGB", (12, 12), "red").save(tiny)
    page.locator("#chosen-styles input[type=file]").set_input_files(str(tiny))
    sync_api.expect(page.locator("#status")).to_contain_text("icon.png is 12x12 px: too small", timeout=20_000)
    sync_api.expect(page.locator("#chosen-styles .thumbnail-item")).to_have_count(0)


def test_a_sixth_style_is_refused_with_a_message(page):
    for i in range(5):
        _pick(page, ".sg-style", i)
        sync_api.expect(page.locator("#chosen-styles .thumbnail-item")).to_have_count(i + 1)
    page.locator(".sg-style .thumbnail-item").nth(6).click()  # refused: its mark does not flip
    sync_api.expect(page.locator("#status")).to_contain_text("at most 5 styles", timeout=10_000)
    page.locator("#chosen-styles input[type=file]").set_input_files(str(REPO / "gallery" / "style" / "moss-grass.png"))
    sync_api.expect(page.locator("#status")).to_contain_text(  # named as the gallery names the same picture
        re.compile(r"(moss-grass\.png|Moss and grass) was not added"), timeout=10_000)
    sync_api.expect(page.locator("#chosen-styles .thumbnail-item")).to_have_count(5)
    sync_api.expect(page.locator(".sg-style .thumbnail-item.sg-chosen")).to_have_count(5)


def test_an_upload_over_the_per_request_cap_is_refused_with_a_message(page, tmp_path):
    import numpy as np
    from PIL import Image

    files = []
    for i in range(3):  # each under the 15 MB file cap, together over the 32 MB request cap
        files.append(tmp_path / f"noise{i}.png")
        noise = np.random.default_rng(i).integers(0, 255, (2000, 2000, 3), dtype=np.uint8)
        Image.fromarray(noise).save(files[-1], compress_level=0)
    page.locator("#chosen-styles input[type=file]").set_input_files([str(f) for f in files])
    sync_api.expect(page.locator(".toast-body").filter(has_text="This upload is too large: at most 32 MB per upload")
                    ).to_be_visible(timeout=20_000)
    sync_api.expect(page.locator("#chosen-styles .thumbnail-item")).to_have_count(0)


def test_the_advanced_settings_show_the_sliders_of_the_engine_that_paints(page):
    # auto paints with neural on a machine without a GPU: Style strength, no Content weight and no Steps
    page.get_by_text("Advanced settings").click()
    strength, weight, steps = page.locator("#strength"), page.locator("#content-weight"), page.locator("#steps")
    sync_api.expect(strength).to_be_visible()
    sync_api.expect(weight).to_be_hidden()
    sync_api.expect(steps).to_be_hidden()
    page.locator("#advanced").screenshot(path=str(ARTIFACTS / "browser_advanced_neural.png"))
    page.locator("#engine label", has_text="classic").click()
    sync_api.expect(weight).to_be_visible()
    sync_api.expect(steps).to_be_visible()
    sync_api.expect(strength).to_be_hidden()
    page.locator("#engine label", has_text="neural").click()
    sync_api.expect(strength).to_be_visible()
    box = strength.locator("input[type=number]")
    box.fill("0.3")
    box.press("Enter")
    sync_api.expect(strength.locator("input[type=range]")).to_have_value("0.3")
    page.get_by_text("Advanced settings").click()
    _run(page)  # a run at strength 0.3 (the status says which engine ran)
    sync_api.expect(page.locator("#status")).to_contain_text("neural")

    # A region at its own strength: the slider beside the region shows the Style strength until it is moved
    region = page.locator("#region-strength")
    sync_api.expect(region).to_be_visible()
    sync_api.expect(page.locator("#region-pick input")).to_have_value("R1")
    sync_api.expect(region.locator("input[type=range]")).to_have_value("0.3")
    sync_api.expect(region.locator("button")).to_have_count(0)  # no reset button (it would bypass the record)
    _choose(page, "region-pick", "R2")
    box = region.locator("input[type=number]")
    box.fill("0")
    box.press("Enter")
    sync_api.expect(page.locator("#overrides-text")).to_contain_text("R2 at strength 0.00")
    _choose(page, "region-pick", "R1")  # the slider follows the region shown
    sync_api.expect(region.locator("input[type=range]")).to_have_value("0.3")
    _choose(page, "region-pick", "R2")
    sync_api.expect(region.locator("input[type=range]")).to_have_value("0")
    page.locator("#personalise").screenshot(path=str(ARTIFACTS / "browser_region_strength.png"))
    before = page.locator("#result img").get_attribute("src")
    page.click("#regenerate")
    sync_api.expect(page.locator("#status")).to_contain_text("done in", timeout=RUN_TIMEOUT_MS)
    sync_api.expect(page.locator("#result img")).not_to_have_attribute("src", before, timeout=RUN_TIMEOUT_MS)
    sync_api.expect(page.locator("#region-pick input")).to_have_value("R2")  # the choices stay after the run
    sync_api.expect(region.locator("input[type=range]")).to_have_value("0")
    page.click("#reset")  # "All regions automatic": the slider goes back to the Style strength
    sync_api.expect(page.locator("#overrides-text")).not_to_contain_text("strength")
    sync_api.expect(region.locator("input[type=range]")).to_have_value("0.3")
    box.fill("0.5")
    box.press("Enter")
    sync_api.expect(page.locator("#overrides-text")).to_contain_text("R2 at strength 0.50")
    page.get_by_text("Advanced settings").click()
    page.locator("#engine label", has_text="classic").click()  # the regions will change: the choice is cleared
    sync_api.expect(page.locator("#overrides-text")).not_to_contain_text("strength")
    sync_api.expect(region).to_be_hidden()

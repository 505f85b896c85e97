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


@pytest.fixture
def page(browser, url):
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    page = context.new_page()
    page.goto(url, wait_until="networkidle")
    yield page
    context.close()


def _pick(page, gallery: str, index: int) -> None:
    """Click a thumbnail and wait until its chosen mark flips: gradio ignores a click on a gallery whose last click
    is still being handled (trigger_mode "once"), so a second pick within ~0.2 s would be lost."""
    item = page.locator(f"#{gallery} .thumbnail-item").nth(index)
    chosen = re.compile(r"\bsg-chosen\b")
    was_chosen = chosen.search(item.get_attribute("class") or "") is not None
    item.click()
    if was_chosen:
        sync_api.expect(item).not_to_have_class(chosen)
    else:
        sync_api.expect(item).to_have_class(chosen)


def _set_size(page, px: int) -> None:
    """Open the Advanced settings and type a working size (a small one keeps the test quick)."""
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
            return
        except AssertionError:
            continue
    # Still the default size: the run is only slower, and the test checks the stages, not the size.


def test_pick_generate_and_see_every_stage(page):
    _pick(page, "content-gallery", 1)
    _pick(page, "style-gallery", 0)
    _pick(page, "style-gallery", 5)
    chosen = page.locator("#chosen-styles .thumbnail-item")
    sync_api.expect(chosen).to_have_count(2)
    sync_api.expect(page.locator("#content-gallery .thumbnail-item.sg-chosen")).to_have_count(1)
    sync_api.expect(page.locator("#style-gallery .thumbnail-item.sg-chosen")).to_have_count(2)
    sync_api.expect(page.locator("#content-image img")).to_be_visible()
    _set_size(page, 256)
    # The Steps slider offers the range of the engine that paints here, and is hidden for an engine without steps
    # (the neural engine, auto's choice on a CPU where its networks are installed).
    from stylegallery.request import knob_setting

    steps = knob_setting("auto", "paper", "steps")
    if steps is None:
        sync_api.expect(page.locator("#steps")).to_be_hidden()
    else:
        sync_api.expect(page.locator("#steps input[type=range]")).to_have_attribute("max", str(steps["maximum"]))
        sync_api.expect(page.locator("#steps")).to_contain_text(f"{steps['engine']} engine: {steps['means']}")

    fetched = collections.Counter()  # the run's pictures, by address
    page.on("request", lambda request: fetched.update([request.url]) if "stylegallery-runs" in request.url else None)
    page.click("#generate")
    for selector in ("#region-map img", "#match-figure img", "#result img"):
        page.wait_for_selector(selector, state="visible", timeout=RUN_TIMEOUT_MS)
    page.wait_for_selector("#dl-result:not([disabled])", timeout=RUN_TIMEOUT_MS)
    sync_api.expect(page.locator("#status")).to_contain_text("done in")
    page.wait_for_load_state("networkidle")
    assert len(fetched) >= 4 and max(fetched.values()) == 1, fetched  # ...and the browser fetches each one once
    from stylegallery.request import Request, plan

    sync_api.expect(page.locator("#status")).to_contain_text(plan(Request()).engine)  # the engine that painted
    sync_api.expect(page.locator("#match-table")).to_contain_text("R1")
    for selector in ("#region-map img", "#match-figure img", "#result img"):
        box = page.locator(selector).bounding_box()
        assert box is not None and box["width"] > 100 and box["height"] > 100, selector
    for picture in ("#content-image", "#region-map", "#result"):  # gradio's floating label covers no picture
        label = page.locator(f"{picture} label[data-testid=block-label]").bounding_box()
        image = page.locator(f"{picture} img").bounding_box()
        assert label["y"] + label["height"] <= image["y"] + 1, f"{picture}: its label covers the picture's top"
    natural = page.evaluate("() => { const i = document.querySelector('#result img');"
                            " return [i.naturalWidth, i.naturalHeight]; }")
    from stylegallery.gallery import by_kind, load_gallery

    photo = by_kind(load_gallery([]), "content")[1]  # the photo picked above
    # the working size, or the photo's own size for an engine that paints at it; the photo's aspect ratio either way
    assert max(natural) in (256, max(photo.width, photo.height))
    assert abs(natural[0] / natural[1] - photo.width / photo.height) < 0.05
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "browser_run.png"), full_page=True)

    # Personalise: paint region R2 like region 1 of style 2. Choosing the target records it (there is no "Set"),
    # regenerating reruns only stage 3, and the dropdowns still show the choice afterwards.
    _choose(page, "region-pick", "R2")
    _choose(page, "target-pick", "Style 2 · region 1")
    sync_api.expect(page.get_by_text("R2 → Style 2 · region 1")).to_be_visible()
    page.click("#regenerate")
    chosen_row = re.compile(r"R2\s*Style 2\s*region 1\s*-?[0-9.]+\s*you")  # the table's cells, in order
    sync_api.expect(page.locator("#match-table")).to_contain_text(chosen_row, timeout=RUN_TIMEOUT_MS)
    sync_api.expect(page.locator("#status")).to_contain_text("done in", timeout=RUN_TIMEOUT_MS)
    sync_api.expect(page.locator("#region-pick input")).to_have_value("R2")
    sync_api.expect(page.locator("#target-pick input")).to_have_value("Style 2 · region 1")
    page.screenshot(path=str(ARTIFACTS / "browser_personalised.png"), full_page=True)
    _choose(page, "region-pick", "R1")  # the target follows the region shown
    sync_api.expect(page.locator("#target-pick input")).to_have_value("auto")
    _choose(page, "region-pick", "R2")
    sync_api.expect(page.locator("#target-pick input")).to_have_value("Style 2 · region 1")

    # A setting that changes the regions clears the choices, so a stale one cannot break the next run.
    k_max = page.locator("#k-max input[type=number]")
    k_max.fill("3")
    k_max.press("Enter")
    sync_api.expect(page.get_by_text("Your choices: none yet")).to_be_visible()
    sync_api.expect(page.locator("#region-pick input")).to_have_value("")


def _choose(page, dropdown: str, option: str) -> None:
    page.locator(f"#{dropdown} input").click()
    page.get_by_role("option", name=option, exact=True).click()


def test_no_style_chosen_shows_an_error_in_the_page(page):
    _pick(page, "content-gallery", 0)
    sync_api.expect(page.locator("#content-image img")).to_be_visible()  # the pick has reached the page
    page.click("#generate")
    sync_api.expect(page.get_by_text("Choose at least one style image").first).to_be_visible(timeout=30_000)
    sync_api.expect(page.locator("#status")).to_contain_text("Failed: Choose at least one style image")
    sync_api.expect(page.locator("#region-map img")).to_have_count(0)


def test_clicking_a_chosen_style_again_removes_it(page):
    _pick(page, "style-gallery", 2)
    sync_api.expect(page.locator("#chosen-styles .thumbnail-item")).to_have_count(1)
    _pick(page, "style-gallery", 2)
    sync_api.expect(page.locator("#chosen-styles .thumbnail-item")).to_have_count(0)
    sync_api.expect(page.locator("#style-gallery .thumbnail-item.sg-chosen")).to_have_count(0)


def _assert_fits(page, what: str) -> None:
    width, inner = page.evaluate("() => [document.documentElement.scrollWidth, innerWidth]")
    assert width <= inner + 1, f"{what}: the page is {width} px wide in a {inner} px viewport"
    box = page.locator("#generate").bounding_box()
    assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= inner + 1, f"{what}: Generate is at {box}"
    thumbs = page.locator("#style-gallery .thumbnail-item")
    assert thumbs.count() >= 12
    for i in range(thumbs.count()):  # every style thumbnail can be seen without scrolling sideways
        t = thumbs.nth(i).bounding_box()
        assert t is not None and t["x"] >= 0 and t["x"] + t["width"] <= inner + 1, f"{what}: style {i + 1} at {t}"


def test_a_phone_sized_screen_has_no_sideways_scroll(browser, url):
    context = browser.new_context(viewport={"width": 400, "height": 860})
    page = context.new_page()
    try:
        page.goto(url, wait_until="networkidle")
        _assert_fits(page, "before a run")
        # Before a run: words where the pictures will be, not empty boxes with broken-image icons.
        sync_api.expect(page.locator("#match-figure")).to_be_hidden()
        sync_api.expect(page.locator("#style-regions")).to_be_hidden()
        sync_api.expect(page.locator("#region-map .empty .icon")).to_be_hidden()
        words = page.evaluate("() => getComputedStyle(document.querySelector('#region-map .empty'), '::after')"
                              ".content")
        assert "regions appear here" in words
        _pick(page, "content-gallery", 1)
        _pick(page, "style-gallery", 0)
        sync_api.expect(page.locator("#chosen-styles .thumbnail-item")).to_have_count(1)
        _set_size(page, 256)
        page.click("#generate")
        sync_api.expect(page.locator("#status")).to_contain_text("done in", timeout=RUN_TIMEOUT_MS)
        _assert_fits(page, "after a run")
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "browser_narrow.png"), full_page=True)
    finally:
        context.close()


def test_a_sixth_style_is_refused_with_a_message(page):
    for i in range(5):
        _pick(page, "style-gallery", i)
        sync_api.expect(page.locator("#chosen-styles .thumbnail-item")).to_have_count(i + 1)
    page.locator("#style-gallery .thumbnail-item").nth(6).click()  # refused: its mark does not flip
    sync_api.expect(page.locator(".toast-body").filter(has_text="At most 5 styles")).to_be_visible(timeout=10_000)
    page.locator("#chosen-styles input[type=file]").set_input_files(str(REPO / "gallery" / "style" / "moss-grass.png"))
    sync_api.expect(page.locator(".toast-body").filter(has_text="moss-grass.png was not added")).to_be_visible(
        timeout=10_000)
    sync_api.expect(page.locator("#chosen-styles .thumbnail-item")).to_have_count(5)
    sync_api.expect(page.locator("#style-gallery .thumbnail-item.sg-chosen")).to_have_count(5)


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

"""The tablet app in headless Chromium: pair, watch an episode, label, undo, relabel; refusals."""

from __future__ import annotations

from playwright.sync_api import expect


def pair(page, served, name: str = "tablet-1") -> None:
    page.goto(served.url)
    expect(page.locator("#pairing")).to_be_visible()
    page.fill("#pair-code", served.app.pairing.code)
    page.fill("#pair-name", name)
    page.tap("#pair-button")
    expect(page.locator("#app")).to_be_visible()


def test_operator_pairs_watches_an_episode_labels_undoes_and_relabels(served, tablet) -> None:
    page = tablet
    pair(page, served)
    expect(page.locator("#robot-state")).to_have_text("ready")
    expect(page.locator("#next-instruction")).to_contain_text("pick up the")
    page.tap("#start")
    expect(page.locator("#robot-state")).to_have_text("running")
    expect(page.locator("#live-step")).not_to_have_text("0", timeout=5000)  # the live view follows the episode
    episode = page.locator("#current-episode")
    expect(episode).to_be_visible(timeout=15000)  # the episode ended and waits for its label
    episode_id = episode.get_attribute("data-episode")
    assert page.locator("#current-frames img").count() >= 1

    page.tap("#label-success")
    expect(page.locator("#notice")).to_contain_text(f"Saved: success for {episode_id}")
    label = served.store.refresh().index.episodes[episode_id].meta.label
    assert label.success and label.labeler == "tablet-1" and label.source == "operator"

    expect(page.locator("#undo-bar")).to_be_visible()
    page.tap("#undo")
    expect(page.locator("#notice")).to_contain_text("Undone")
    assert served.store.refresh().index.episodes[episode_id].meta.label is None

    expect(page.locator("#current-episode")).to_have_attribute("data-episode", episode_id)
    page.tap("#label-failure")
    expect(page.locator("#notice")).to_contain_text(f"Saved: failure for {episode_id}")
    record = served.store.refresh().index.episodes[episode_id]
    assert record.reward == 0.0
    assert [(label.success, label.retracted) for label in record.labels] == [
        (True, False),
        (True, True),
        (False, False),
    ]


def test_writes_without_pairing_or_csrf_are_refused_and_nothing_lands(served, tablet, browser) -> None:
    page = tablet
    served.robot.start()
    served.robot._thread.join(timeout=15)
    (record,) = served.store.refresh().records()
    path = f"/api/episodes/{record.episode_id}/label"

    stranger = browser.new_context().new_page()
    stranger.goto(served.url)
    expect(stranger.locator("#pairing")).to_be_visible()  # an unpaired tablet sees only the pairing form
    status = stranger.evaluate(
        """async (path) => (await fetch(path, {method: "POST", headers: {"Content-Type": "application/json"},
                                              body: JSON.stringify({success: true, revision: 0})})).status""",
        path,
    )
    assert status == 401
    stranger.context.close()

    pair(page, served)
    status = page.evaluate(  # paired, but a forged request carries no CSRF token
        """async (path) => (await fetch(path, {method: "POST", headers: {"Content-Type": "application/json"},
                                              body: JSON.stringify({success: true, revision: 0})})).status""",
        path,
    )
    assert status == 403
    assert served.store.refresh().records()[0].labels == []
    expect(page.locator("#you")).to_have_text("tablet-1")  # the paired page itself still works

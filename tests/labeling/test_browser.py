"""The tablet app in headless Chromium: pair, watch an episode, label, undo, relabel; discard a fault;
corrections after training; refusals."""

from __future__ import annotations

from conftest import tiny_policy
from playwright.sync_api import expect
from synthetic import synthetic_episode
from tablet import Served, quickstart_config

from ript_robot.data.store import EpisodeStore
from ript_robot.labeling.robot import RobotLink
from ript_robot.labeling.server import LabelServer, build_app
from ript_robot.policies.published import publish_policy
from ript_robot.runtime.loop import FAULT_REASON
from ript_robot.success.labels import LabelDesk


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


def test_a_fault_is_discarded_and_undone_and_a_correction_after_training_is_shown(served, tablet) -> None:
    store = served.store
    fault = synthetic_episode("workcell/fault", steps=4, success=None, seed=1, image_size=32)
    fault.meta.slot_id, fault.meta.sampling = "v000000-r001-00000", "sampled"
    fault.meta.end_reason = FAULT_REASON
    trained = synthetic_episode("workcell/trained", steps=4, success=None, seed=2, image_size=32)
    store.write_episode(trained)
    desk = LabelDesk(store)
    desk.label(trained.meta.episode_id, True, "tablet-0", revision=0)
    used = {trained.meta.episode_id: {"success": True, "time": 0.0, "judged_at": 0.0}}
    policy = tiny_policy()
    policy.version = 1
    publish_policy(
        store.backend, policy, {"iteration": 1, "trained_on": [trained.meta.episode_id], "labels_used": used}
    )
    desk.label(trained.meta.episode_id, False, "tablet-0", revision=1)  # corrected after v1 trained on it
    store.write_episode(fault)
    fault_id = fault.meta.episode_id

    page = tablet
    pair(page, served)
    expect(page.locator("#current-episode")).to_have_attribute("data-episode", fault_id)
    expect(page.locator("#fault")).to_contain_text("Fault: fault: non-finite action")
    expect(page.locator("#backlog")).to_contain_text("1 rollout wait for a label")
    expect(page.locator("#corrections")).to_contain_text(
        f"{trained.meta.episode_id}: used as success by v1, now failure"
    )

    stale = page.evaluate(  # another tablet's view from before: refused, naming the episode
        """async (id) => { const r = await fetch(`/api/episodes/${id}/discard`, {method: "POST",
             headers: {"Content-Type": "application/json", "X-CSRF-Token": csrf},
             body: JSON.stringify({revision: 3})}); return [r.status, (await r.json()).error]; }""",
        fault_id,
    )
    assert stale[0] == 409 and fault_id in stale[1] and store.refresh().index.episodes[fault_id].labels == []

    page.tap("#discard")
    expect(page.locator("#notice")).to_contain_text(f"Saved: discarded for {fault_id}")
    assert store.refresh().index.episodes[fault_id].discarded
    expect(page.locator("#backlog")).to_have_text("The trainer waits on no label.")
    expect(page.locator("#undo-text")).to_contain_text("Discarded")
    page.tap("#undo")
    expect(page.locator("#notice")).to_contain_text("Undone")
    record = store.refresh().index.episodes[fault_id]
    assert not record.discarded and record.meta.label is None
    expect(page.locator("#backlog")).to_contain_text("1 rollout wait for a label")


class PersonAtTheArm(RobotLink):
    """The policy node's status while a person commands the arm with a gamepad (its second takeover)."""

    def status(self) -> dict:
        return {
            "seq": 1, "state": "running", "message": "episode e1 on workcell/0/0", "context": None,
            "episode_id": "e1", "step": 12, "policy_version": 3, "software_stop": False, "last_episode": None,
            "control": "person", "interventions": 2,
        }  # fmt: skip

    def frame(self) -> None:
        return None

    def start(self) -> tuple[bool, str]:
        return False, "an episode is running"

    def software_stop(self, engage: bool) -> tuple[bool, str]:
        return True, "software stop engaged"


def test_the_tablet_shows_a_person_in_control_and_counts_takeovers(tmp_path, tablet) -> None:
    cfg = quickstart_config(str(tmp_path / "store"))
    store = EpisodeStore(cfg.store.uri, create=True)
    rescued = synthetic_episode("workcell/0", steps=4, success=None, image_size=32)
    rescued.meta.interventions, rescued.meta.intervened_steps = 1, 2
    store.write_episode(rescued)
    app = build_app(cfg.label_app, cfg.store, cfg.detector, PersonAtTheArm())
    server = LabelServer(app, "127.0.0.1", 0).start()
    try:
        pair(tablet, Served(app, server, app.store, None))
        expect(tablet.locator("#live-person")).to_be_visible()
        expect(tablet.locator("#live-interventions")).to_have_text("2")
        expect(tablet.locator("#current-episode")).to_contain_text("taken over 1x")
    finally:
        server.stop()

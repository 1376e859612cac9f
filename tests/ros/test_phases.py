"""The policy node's phase table: only listed transitions happen, and the stop is reachable from everywhere."""

from __future__ import annotations

import pytest
from ript_ros.phases import EPISODE, TRANSITIONS, IllegalTransition, Phase, PhaseMachine


def test_an_unlisted_transition_is_refused_naming_both_phases():
    seen = []
    machine = PhaseMachine(on_change=lambda phase, message: seen.append(phase))
    machine.to(Phase.INACTIVE, "configured")
    with pytest.raises(IllegalTransition, match="from inactive to running"):
        machine.to(Phase.RUNNING, "no")
    assert machine.phase is Phase.INACTIVE and seen == [Phase.INACTIVE]


def test_every_phase_is_reachable_and_every_phase_reaches_the_software_stop():
    reached, frontier = {Phase.UNCONFIGURED}, [Phase.UNCONFIGURED]
    while frontier:
        for nxt in TRANSITIONS[frontier.pop()] - reached:
            reached.add(nxt)
            frontier.append(nxt)
    assert reached == set(Phase)
    for phase in Phase:  # an episode first ends (SAVING commits it), then the stop latches
        via = TRANSITIONS[phase] | {q for p in TRANSITIONS[phase] & {Phase.SAVING} for q in TRANSITIONS[p]}
        assert Phase.STOPPED in via, phase
    assert all(Phase.RUNNING not in TRANSITIONS[p] for p in Phase if p is not Phase.READY)  # start only when ready
    assert all(TRANSITIONS[p] <= {Phase.ENDING, Phase.SAVING} for p in EPISODE)  # no swap or reset mid-episode

"""A robot in a subprocess for the store's fault tests: commits N episodes, optionally hangs mid-episode.

usage: python store_worker.py URI ROBOT_ID N [--hang]
Prints COMMITTED when its N episodes are in the store; with --hang it then streams half of
one more episode to staging, prints STREAMING and waits to be killed.
"""

from __future__ import annotations

import sys
import time

from synthetic import synthetic_episode

from ript_robot.data import EpisodeStore


def main() -> None:
    uri, robot, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    store = EpisodeStore(uri)
    with store.writer(chunk_frames=4, flush_frames=4) as writer:
        for i in range(n):
            episode = synthetic_episode(f"ctx{i % 3}", steps=9, seed=i)
            episode.meta.robot_id = robot
            store.write_episode(episode, writer)
        writer.flush()
        print("COMMITTED", flush=True)
        if "--hang" in sys.argv:
            episode = synthetic_episode("ctx-partial", steps=40)
            writer.begin(episode.meta)
            writer.add_chunk(episode.meta.episode_id, episode.chunks[0], episode.chunk_observations[0])
            for record in episode.steps[:20]:
                writer.add_step(episode.meta.episode_id, record)
            writer.flush()
            print("STREAMING", flush=True)
            time.sleep(600)


if __name__ == "__main__":
    main()

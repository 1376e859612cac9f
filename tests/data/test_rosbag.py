"""rosbag2 / MCAP import: real bags written with rosbags' own Writer, imported into a real store."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from conftest import TINY
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from ript_robot.config import PolicyConfig
from ript_robot.data.rosbag import BagImportError, BagTopics, import_bag, read_bag
from ript_robot.data.store import EpisodeStore
from ript_robot.images import resize_area
from ript_robot.policies.chunked import ChunkedPolicy
from ript_robot.rl.sft import chunk_dataset

TYPESTORE = get_typestore(Stores.ROS2_HUMBLE)
MSG = TYPESTORE.types
SIZE = 32
START = 1_700_000_000 * 10**9  # bag times are wall-clock ns
MS = 10**6
TOPICS = BagTopics(cameras={"front": "/camera/image"}, joint_states="/joint_states", command="/cmd", rate_hz=10)

# Three inputs at different rates: camera 20 Hz from 0 ms, joints 50 Hz from 13 ms, commands 30 Hz
# from 100 ms (the last input to start, so the first tick is at 100 ms); ticks coincide with some
# camera and command times, which exercises "at or before" and "at or after".
CAMERA_TIMES = [START + i * 50 * MS for i in range(44)]
JOINT_TIMES = [START + 13 * MS + i * 20 * MS for i in range(110)]
COMMAND_TIMES = [START + 100 * MS + round(i * 1e9 / 30) for i in range(60)]

Stream = tuple[str, str, Sequence[int], Callable[[int, int], Any]]  # topic, type, times, make(i, t)


def header(t: int) -> Any:
    return MSG["std_msgs/msg/Header"](
        stamp=MSG["builtin_interfaces/msg/Time"](sec=t // 10**9, nanosec=t % 10**9), frame_id=""
    )


def frame(i: int, size: int = SIZE) -> np.ndarray:
    """A smooth RGB image (JPEG keeps it close) whose channels and index all differ."""
    x = np.arange(size)[None, :, None]
    return np.broadcast_to(x * 4 + np.array([0, 40, 80]) + i, (size, size, 3)).astype(np.uint8)


def image(i: int, t: int, encoding: str = "rgb8", size: int = SIZE) -> Any:
    rgb = frame(i, size)
    pixels = {"rgb8": rgb, "bgr8": rgb[..., ::-1], "mono8": rgb[..., :1], "yuv422": rgb[..., :2]}[encoding]
    return MSG["sensor_msgs/msg/Image"](
        header=header(t),
        height=size,
        width=size,
        encoding=encoding,
        is_bigendian=0,
        step=size * pixels.shape[2],
        data=np.ascontiguousarray(pixels).reshape(-1),
    )


def compressed(i: int, t: int, codec: str) -> Any:
    encoder = av.CodecContext.create(codec, "w")
    encoder.width = encoder.height = SIZE
    encoder.pix_fmt = "rgb24" if codec == "png" else "yuvj420p"
    picture = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame(i)), format="rgb24").reformat(
        format=encoder.pix_fmt
    )
    data = b"".join(bytes(p) for p in [*encoder.encode(picture), *encoder.encode(None)])
    return MSG["sensor_msgs/msg/CompressedImage"](
        header=header(t), format="jpeg" if codec == "mjpeg" else "png", data=np.frombuffer(data, np.uint8)
    )


def joints(i: int, t: int) -> Any:
    return MSG["sensor_msgs/msg/JointState"](
        header=header(t),
        name=["a", "b", "c"],
        position=np.array([i, 0.5 * i, -i]) * 0.01,
        velocity=np.zeros(0),
        effort=np.zeros(0),
    )


def twist(i: int, t: int) -> Any:
    vector = MSG["geometry_msgs/msg/Vector3"]
    return MSG["geometry_msgs/msg/TwistStamped"](
        header=header(t),
        twist=MSG["geometry_msgs/msg/Twist"](
            linear=vector(x=0.1 * i, y=0.2 * i, z=0.3 * i), angular=vector(x=-0.1 * i, y=0.0, z=0.1 * i)
        ),
    )


def twist_values(i: int) -> list[float]:
    return [0.1 * i, 0.2 * i, 0.3 * i, -0.1 * i, 0.0, 0.1 * i]


def multiarray(i: int, t: int) -> Any:
    layout = MSG["std_msgs/msg/MultiArrayLayout"](dim=[], data_offset=0)
    return MSG["std_msgs/msg/Float64MultiArray"](layout=layout, data=np.array([i, -2.0 * i]))


def default_streams(camera: Callable[[int, int], Any] = image) -> list[Stream]:
    return [
        ("/camera/image", "sensor_msgs/msg/Image", CAMERA_TIMES, camera),
        ("/joint_states", "sensor_msgs/msg/JointState", JOINT_TIMES, joints),
        ("/cmd", "geometry_msgs/msg/TwistStamped", COMMAND_TIMES, twist),
    ]


def write_bag(path: Path, streams: Sequence[Stream], storage: StoragePlugin = StoragePlugin.SQLITE3) -> Path:
    """A rosbag2 directory holding every stream's messages, written in time order."""
    writer = Writer(path, version=9, storage_plugin=storage)
    writer.open()
    messages = []
    for topic, msgtype, times, make in streams:
        connection = writer.add_connection(topic, msgtype, typestore=TYPESTORE)
        messages += [(t, connection, msgtype, make, i) for i, t in enumerate(times)]
    for t, connection, msgtype, make, i in sorted(messages, key=lambda m: m[0]):
        writer.write(connection, t, TYPESTORE.serialize_cdr(make(i, t), msgtype))
    writer.close()
    return path


def expected_indices() -> tuple[list[int], list[int], list[int]]:
    """For each tick: the latest camera and joint message at or before it, the first command at or after it."""
    first, last = COMMAND_TIMES[0], COMMAND_TIMES[-1]
    ticks = [first + k * 100 * MS for k in range(int((last - first) * TOPICS.rate_hz / 1e9) + 1)]
    camera = [max(i for i, t in enumerate(CAMERA_TIMES) if t <= tick) for tick in ticks]
    joint = [max(i for i, t in enumerate(JOINT_TIMES) if t <= tick) for tick in ticks]
    command = [min(i for i, t in enumerate(COMMAND_TIMES) if t >= tick) for tick in ticks]
    return camera, joint, command


@pytest.mark.parametrize("storage", [StoragePlugin.SQLITE3, StoragePlugin.MCAP], ids=["sqlite3", "mcap"])
def test_import_bag_commits_a_demonstration_that_sft_accepts(tmp_path, storage):
    bag = write_bag(tmp_path / "bag", default_streams(), storage)
    store = EpisodeStore(tmp_path / "store")
    episode_id = import_bag(bag, store, TOPICS, "pick up the red block", context_id="bench-1")

    assert [r.episode_id for r in store.refresh().records(kind="demonstration")] == [episode_id]
    episode = store.read_episode(episode_id)
    camera, joint, command = expected_indices()
    assert len(episode.steps) == len(camera) == 20  # 1.967 s of commands at 10 Hz, plus the first tick
    meta = episode.meta
    assert (meta.kind, meta.policy_version, meta.num_steps) == ("demonstration", -1, 20)
    assert (meta.context.context_id, meta.context.instruction) == ("bench-1", "pick up the red block")
    assert (meta.label.success, meta.label.source, meta.label.labeler) == (True, "operator", "teleop")
    assert episode.chunks == [] and {s.chunk_index for s in episode.steps} == {0}
    for k, step in enumerate(episode.steps):
        assert step.timestamp == pytest.approx((COMMAND_TIMES[0] + k * 100 * MS) / 1e9)
        np.testing.assert_array_equal(step.observation.images["front"], frame(camera[k]))
        np.testing.assert_allclose(step.observation.state, np.array([1, 0.5, -1]) * 0.01 * joint[k], rtol=1e-6)
        np.testing.assert_allclose(step.action, twist_values(command[k]), rtol=1e-6)
    assert store.verify().ok

    policy = ChunkedPolicy(PolicyConfig(**TINY), (SIZE, SIZE), state_dim=3, action_dim=6)
    assert len(chunk_dataset(policy, [episode])) == 20


@pytest.mark.parametrize("encoding", ["bgr8", "mono8"])
def test_raw_image_encodings_read_back_as_rgb(tmp_path, encoding):
    bag = write_bag(tmp_path / "bag", default_streams(lambda i, t: image(i, t, encoding)))
    episode = read_bag(bag, TOPICS, "pick")
    camera, _, _ = expected_indices()
    for k, step in enumerate(episode.steps):
        rgb = frame(camera[k])
        expected = rgb if encoding == "bgr8" else np.repeat(rgb[..., :1], 3, axis=2)
        np.testing.assert_array_equal(step.observation.images["front"], expected)


@pytest.mark.parametrize(("codec", "tolerance"), [("png", 0), ("mjpeg", 3.0)])
def test_compressed_images_are_decoded(tmp_path, codec, tolerance):
    streams = default_streams(lambda i, t: compressed(i, t, codec))
    streams[0] = ("/camera/image", "sensor_msgs/msg/CompressedImage", *streams[0][2:])
    episode = read_bag(write_bag(tmp_path / "bag", streams, StoragePlugin.MCAP), TOPICS, "pick")
    camera, _, _ = expected_indices()
    for k, step in enumerate(episode.steps):
        got = step.observation.images["front"]
        assert got.shape == (SIZE, SIZE, 3) and got.dtype == np.uint8
        assert np.abs(got.astype(int) - frame(camera[k])).mean() <= tolerance


def test_float64_multiarray_commands_become_actions(tmp_path):
    streams = default_streams()
    streams[2] = ("/cmd", "std_msgs/msg/Float64MultiArray", COMMAND_TIMES, multiarray)
    episode = read_bag(write_bag(tmp_path / "bag", streams), TOPICS, "pick")
    _, _, command = expected_indices()
    np.testing.assert_array_equal(
        np.stack([s.action for s in episode.steps]), np.array([[i, -2.0 * i] for i in command], np.float32)
    )
    assert episode.meta.context.context_id == "bag"  # defaults to the bag's name


def test_missing_topic_lists_the_topics_the_bag_has(tmp_path):
    bag = write_bag(tmp_path / "bag", default_streams())
    topics = TOPICS.model_copy(update={"command": "/teleop/cmd"})
    with pytest.raises(BagImportError, match=r"command \(/teleop/cmd\)") as error:
        read_bag(bag, topics, "pick")
    for topic in ("/camera/image (sensor_msgs/msg/Image)", "/cmd (geometry_msgs/msg/TwistStamped)", "/joint_states"):
        assert topic in str(error.value)


def test_wrong_message_type_names_the_supported_ones(tmp_path):
    bag = write_bag(tmp_path / "bag", default_streams())
    topics = TOPICS.model_copy(update={"command": "/joint_states"})
    with pytest.raises(BagImportError, match=r"sensor_msgs/msg/JointState.*TwistStamped"):
        read_bag(bag, topics, "pick")


def test_unsupported_encoding_names_the_encoding(tmp_path):
    bag = write_bag(tmp_path / "bag", default_streams(lambda i, t: image(i, t, "yuv422")))
    with pytest.raises(BagImportError, match=r"/camera/image.*'yuv422' is not supported; supported: rgb8, bgr8"):
        read_bag(bag, TOPICS, "pick")


def test_image_size_change_is_refused(tmp_path):
    bag = write_bag(tmp_path / "bag", default_streams(lambda i, t: image(i, t, size=SIZE if i < 20 else 16)))
    with pytest.raises(BagImportError, match=r"image size changes from \(32, 32, 3\) to \(16, 16, 3\)"):
        read_bag(bag, TOPICS, "pick")


def test_nan_command_is_refused(tmp_path):
    streams = default_streams()
    streams[2] = (
        "/cmd",
        "std_msgs/msg/Float64MultiArray",
        COMMAND_TIMES,
        lambda i, t: multiarray(i if i != 9 else np.nan, t),
    )
    with pytest.raises(BagImportError, match=r"command \(/cmd\): non-finite value \[nan, nan\] at 0.400 s"):
        read_bag(write_bag(tmp_path / "bag", streams), TOPICS, "pick")


def test_stale_input_is_refused(tmp_path):
    streams = default_streams()
    gap = [t for t in CAMERA_TIMES if not START + 800 * MS < t < START + 1500 * MS]
    streams[0] = (*streams[0][:2], gap, image)
    with pytest.raises(BagImportError, match=r"camera 'front' \(/camera/image\) is stale at step 13 .*max_age=0.5 s"):
        read_bag(write_bag(tmp_path / "bag", streams), TOPICS, "pick")
    assert len(read_bag(tmp_path / "bag", TOPICS, "pick", max_age=1.0).steps) == 20


def test_empty_bag_is_refused(tmp_path):
    bag = write_bag(tmp_path / "bag", [(topic, msgtype, [], make) for topic, msgtype, _, make in default_streams()])
    with pytest.raises(BagImportError, match="has no messages"):
        read_bag(bag, TOPICS, "pick")


def test_frames_are_resized_as_the_policy_node_resizes_them(tmp_path):
    episode = read_bag(write_bag(tmp_path / "bag", default_streams()), TOPICS, "pick")
    topics = TOPICS.model_copy(update={"image_size": [SIZE // 2, SIZE // 2]})
    small = read_bag(write_bag(tmp_path / "bag2", default_streams()), topics, "pick")
    for big, step in zip(episode.steps, small.steps, strict=True):
        np.testing.assert_array_equal(
            step.observation.images["front"], resize_area(big.observation.images["front"], (SIZE // 2, SIZE // 2))
        )

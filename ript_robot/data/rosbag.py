"""Import teleoperation recordings (ROS 2 bags, sqlite3 or MCAP) into the episode store as demonstrations.

An operator teaches a real arm by teleoperating it while `ros2 bag record` runs. SFT needs
those recordings as episodes of kind "demonstration" with the pairing the runtime logs on the
robot: the observation at a control tick and the command sent after it, at the policy's
control rate. This module reads a bag with `rosbags` (no ROS install needed) and turns it
into one such episode, labeled a success by the operator (keeping a recording is their call).

How a bag becomes steps:
- Times are the bag's receive (log) times, not header stamps: Float64MultiArray has no
  header, and different drivers stamp headers from different clocks.
- Steps are ticks of a fixed-rate clock at `BagTopics.rate_hz`, from the moment every input
  has delivered its first message to the last command. A fixed clock, rather than the command
  topic's own timeline, gives evenly spaced steps at the rate the policy will run at, whatever
  rate and jitter the teleoperation device publishes with (joystick drivers publish on change
  or at their own rate).
- Step k sees the latest image of each camera and the latest joint state at or before its
  tick, and its action is the first command at or after the tick: what the operator sent in
  response to that scene.
- An input older than `max_age` at a tick (a stalled camera, a gap in the commands) is an
  error, not a split point: the episode's context and label describe the whole recording, and
  the pieces of a split one would start or end mid-task. Trim the bag (`ros2 bag convert`)
  around the gap, or raise `max_age` if it is harmless.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import av
import numpy as np
from pydantic import Field
from rosbags.highlevel import AnyReader, AnyReaderError
from rosbags.typesys import Stores, get_typestore

from ript_robot.config import ConfigModel
from ript_robot.images import resize_area
from ript_robot.types import Context, Episode, EpisodeMeta, Label, Observation, StepRecord

if TYPE_CHECKING:
    from ript_robot.data.store import EpisodeStore

IMAGE_ENCODINGS = {"rgb8": 3, "bgr8": 3, "mono8": 1}  # supported raw encodings -> channels


class BagImportError(ValueError):
    """A bag cannot be imported as a demonstration; the message names the problem and the fix."""


class BagTopics(ConfigModel):
    """Which topic of a teleoperation bag holds what, and the control rate to sample it at."""

    cameras: dict[str, str] = Field(
        min_length=1,
        description="camera name, as the policy knows it -> sensor_msgs Image or CompressedImage topic",
    )
    joint_states: str = Field(description="sensor_msgs/msg/JointState topic; its positions are the state")
    command: str = Field(
        description="topic of the operator's commands: geometry_msgs TwistStamped or Twist, or Float64MultiArray"
    )
    rate_hz: float = Field(gt=0, le=1000, description="control rate of the policy in Hz; steps are sampled at it")
    image_size: list[int] = Field(
        default_factory=list,
        description="[height, width] the policy takes: frames are resized by area interpolation, as the policy "
        "node resizes them; [] keeps the camera's size",
    )


def read_bag(
    path: str | Path,
    topics: BagTopics,
    instruction: str,
    context_id: str | None = None,
    scene: str = "default",
    robot_id: str = "teleop",
    max_age: float = 0.5,
) -> Episode:
    """Read a rosbag2 bag (its directory, or one .db3 or .mcap file) as one demonstration episode.

    context_id defaults to the bag's file or directory name (each recording is its own initial
    condition); max_age is the oldest an input may be at a tick, in seconds (see the module).
    """
    path = Path(path)
    if max_age <= 0:
        raise BagImportError(f"max_age must be > 0 seconds, got {max_age}")
    try:
        with AnyReader([path], default_typestore=get_typestore(Stores.ROS2_HUMBLE)) as reader:
            inputs, step_times, start = _sample(reader, path, topics, max_age)
    except AnyReaderError as exc:
        raise BagImportError(
            f"{path} cannot be read as a rosbag2 bag (a directory with metadata.yaml, or a .db3 or .mcap file): {exc}"
        ) from exc
    for inp in inputs:
        inp.check(start)
    *cameras, state, command = inputs
    steps = []
    for k, t in enumerate(step_times.tolist()):
        images = {name: cam.at(k) for name, cam in zip(topics.cameras, cameras, strict=True)}
        if topics.image_size:
            images = {name: resize_area(image, tuple(topics.image_size)) for name, image in images.items()}
        observation = Observation(images, state.at(k), instruction, t / 1e9)
        steps.append(StepRecord(k, t / 1e9, observation, command.at(k), chunk_index=0))
    meta = EpisodeMeta(
        episode_id=uuid.uuid4().hex,
        context=Context(context_id or path.name, instruction, seed=0, scene=scene),
        policy_version=-1,
        robot_id=robot_id,
        start_time=steps[0].timestamp,
        end_time=float(command.times[command.picks[-1]]) / 1e9,
        num_steps=len(steps),
        end_reason="end of recording",
        label=Label(success=True, source="operator", labeler="teleop"),
        kind="demonstration",
    )
    return Episode(meta, steps, chunks=[], chunk_observations=[])


def import_bag(
    path: str | Path,
    store: EpisodeStore,
    topics: BagTopics,
    instruction: str,
    context_id: str | None = None,
    scene: str = "default",
    robot_id: str = "teleop",
    max_age: float = 0.5,
) -> str:
    """Read a bag as one demonstration (see `read_bag`) and commit it to `store`; returns its episode id."""
    return store.write_episode(read_bag(path, topics, instruction, context_id, scene, robot_id, max_age))


# --- sampling ---


@dataclass
class _Input:
    """One input of the episode: its topic, its decoder, and its messages in the bag's order."""

    role: str  # "camera 'front'", "joint states" or "command", for messages
    topic: str
    decode: Callable[[Any], np.ndarray]
    kind: str  # "image" or "vector"
    times: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # receive time per message, ns
    picks: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # message index per step
    values: dict[int, np.ndarray] = field(default_factory=dict)  # decoded picked messages

    def at(self, step: int) -> np.ndarray:
        return self.values[int(self.picks[step])]

    def check(self, start: int) -> None:
        """Refuse a size change between the picked messages and, for vectors, an empty or non-finite one."""
        first = self.values[int(self.picks[0])]
        if first.size == 0:
            raise BagImportError(f"{self.role} ({self.topic}) holds no values: check what its publisher sends")
        for index in dict.fromkeys(self.picks.tolist()):
            value, when = self.values[index], _since(int(self.times[index]), start)
            if value.shape != first.shape:
                what = "image size" if self.kind == "image" else "vector length"
                raise BagImportError(
                    f"{self.role} ({self.topic}): {what} changes from {first.shape} to {value.shape} at {when}; "
                    "an episode needs one size throughout: trim the bag there or fix the publisher"
                )
            if self.kind == "vector" and not np.isfinite(value).all():
                raise BagImportError(
                    f"{self.role} ({self.topic}): non-finite value {value.tolist()} at {when}; "
                    "trim the bag before it or fix the publisher"
                )


def _sample(reader: AnyReader, path: Path, topics: BagTopics, max_age: float) -> tuple[list[_Input], np.ndarray, int]:
    """Pick the message of every input at each tick, then decode the picked messages only.

    Returns the inputs (cameras in `topics.cameras` order, then joint states, then command),
    the tick times in ns and the bag's start time.
    """
    if reader.message_count == 0:
        raise BagImportError(f"{path} has no messages: record the teleoperation again")
    inputs = _inputs(reader, path, topics)
    connections = [c for c in reader.connections if any(c.topic == inp.topic for inp in inputs)]
    start = reader.start_time
    times: dict[str, list[int]] = {inp.topic: [] for inp in inputs}
    for connection, t, _ in reader.messages(connections):
        times[connection.topic].append(t)
    for inp in inputs:
        if not times[inp.topic]:
            raise BagImportError(f"{inp.role} topic {inp.topic} has no messages in {path}")
        inp.times = np.asarray(times[inp.topic], np.int64)
    command = inputs[-1]
    first = max(int(inp.times.min()) for inp in inputs)
    last = int(command.times.max())
    if last < first:
        raise BagImportError(
            f"the last command on {command.topic} ({_since(last, start)}) comes before every input has "
            f"started ({_since(first, start)}): check that the bag holds the whole demonstration"
        )
    period = 1e9 / topics.rate_hz
    ticks = first + np.round(np.arange(int((last - first) / period) + 2) * period).astype(np.int64)
    ticks = ticks[ticks <= last]
    for inp in inputs:
        _pick(inp, ticks, start, max_age, latest=inp is not command)
    wanted = {inp.topic: set(inp.picks.tolist()) for inp in inputs}
    seen = dict.fromkeys(wanted, 0)
    for connection, t, raw in reader.messages(connections):
        index = seen[connection.topic]
        seen[connection.topic] += 1
        if index not in wanted[connection.topic]:
            continue
        message = reader.deserialize(raw, connection.msgtype)
        for inp in inputs:
            if inp.topic == connection.topic:
                try:
                    inp.values[index] = inp.decode(message)
                except BagImportError as exc:
                    raise BagImportError(f"{inp.role} ({inp.topic}) at {_since(t, start)}: {exc}") from None
    return inputs, ticks, start


def _pick(inp: _Input, ticks: np.ndarray, start: int, max_age: float, latest: bool) -> None:
    """Set `inp.picks`: the latest message at or before each tick (latest) or the first at or after it."""
    order = np.argsort(inp.times, kind="stable")
    ordered = inp.times[order]
    if latest:
        slot = np.searchsorted(ordered, ticks, side="right") - 1
        age = ticks - ordered[slot]
    else:
        slot = np.searchsorted(ordered, ticks, side="left")
        age = ordered[slot] - ticks
    stale = np.flatnonzero(age > max_age * 1e9)
    if stale.size:
        k = int(stale[0])
        relation = "the latest message is" if latest else "the next message comes"
        raise BagImportError(
            f"{inp.role} ({inp.topic}) is stale at step {k} ({_since(int(ticks[k]), start)}): {relation} "
            f"{age[k] / 1e9:.3f} s away, more than max_age={max_age} s; trim the bag around the gap "
            "(ros2 bag convert) or raise max_age if it is harmless"
        )
    inp.picks = order[slot]


def _since(t: int, start: int) -> str:
    return f"{(t - start) / 1e9:.3f} s into the bag"


# --- message types ---


def _inputs(reader: AnyReader, path: Path, topics: BagTopics) -> list[_Input]:
    """One `_Input` per camera, then joint states, then command, checking each topic's type."""
    available = reader.topics
    wanted = [(f"camera {name!r}", topic, "image", IMAGE_DECODERS) for name, topic in topics.cameras.items()]
    wanted += [
        ("joint states", topics.joint_states, "vector", STATE_DECODERS),
        ("command", topics.command, "vector", COMMAND_DECODERS),
    ]
    missing = [f"{role} ({topic})" for role, topic, _, _ in wanted if topic not in available]
    if missing:
        have = ", ".join(f"{topic} ({info.msgtype})" for topic, info in sorted(available.items())) or "none"
        raise BagImportError(
            f"{path} has no topic for {', '.join(missing)}; its topics are: {have}. Name them in BagTopics"
        )
    inputs = []
    for role, topic, kind, decoders in wanted:
        msgtype = available[topic].msgtype
        if msgtype not in decoders:
            raise BagImportError(
                f"{role} topic {topic} has message type {msgtype or 'several types'}; "
                f"supported for it: {', '.join(decoders)}"
            )
        inputs.append(_Input(role, topic, decoders[msgtype], kind))
    return inputs


def _raw_image(msg: Any) -> np.ndarray:
    """sensor_msgs/msg/Image in rgb8, bgr8 or mono8 -> (H, W, 3) uint8 RGB."""
    channels = IMAGE_ENCODINGS.get(msg.encoding)
    if channels is None:
        raise BagImportError(
            f"image encoding {msg.encoding!r} is not supported; supported: {', '.join(IMAGE_ENCODINGS)} "
            "(set the camera driver's output encoding to one of them, or republish the topic converted)"
        )
    if msg.data.size != msg.height * msg.step or msg.step < msg.width * channels:
        raise BagImportError(
            f"image holds {msg.data.size} bytes with step {msg.step}, but {msg.height}x{msg.width} {msg.encoding} "
            f"needs height x step bytes and step >= {msg.width * channels}: the message is malformed"
        )
    rows = msg.data.reshape(msg.height, msg.step)[:, : msg.width * channels]
    image = rows.reshape(msg.height, msg.width, channels)
    if msg.encoding == "bgr8":
        image = image[..., ::-1]
    elif msg.encoding == "mono8":
        image = np.repeat(image, 3, axis=2)
    return np.ascontiguousarray(image)


def _compressed_image(msg: Any) -> np.ndarray:
    """sensor_msgs/msg/CompressedImage holding a JPEG or PNG -> (H, W, 3) uint8 RGB, decoded with PyAV."""
    data = msg.data.tobytes()
    codec = "png" if data.startswith(b"\x89PNG") else "mjpeg" if data.startswith(b"\xff\xd8") else None
    if codec is None:
        raise BagImportError(
            f"compressed image format {msg.format!r} is not supported; supported: jpeg, png "
            "(compressedDepth and video codecs are not)"
        )
    decoder = av.CodecContext.create(codec, "r")
    try:
        frames = [*decoder.decode(av.Packet(data)), *decoder.decode(None)]
    except av.FFmpegError as exc:
        raise BagImportError(f"the {codec} data cannot be decoded ({exc})") from exc
    if not frames:
        raise BagImportError(f"the {codec} data decodes to no image")
    return frames[0].to_ndarray(format="rgb24")


def _twist(twist: Any) -> np.ndarray:
    """geometry_msgs Twist -> float32 (linear x, y, z, angular x, y, z)."""
    linear, angular = twist.linear, twist.angular
    return np.array([linear.x, linear.y, linear.z, angular.x, angular.y, angular.z], np.float32)


IMAGE_DECODERS: dict[str, Callable[[Any], np.ndarray]] = {
    "sensor_msgs/msg/Image": _raw_image,
    "sensor_msgs/msg/CompressedImage": _compressed_image,
}
STATE_DECODERS: dict[str, Callable[[Any], np.ndarray]] = {
    "sensor_msgs/msg/JointState": lambda msg: np.asarray(msg.position, np.float32),
}
COMMAND_DECODERS: dict[str, Callable[[Any], np.ndarray]] = {
    "geometry_msgs/msg/TwistStamped": lambda msg: _twist(msg.twist),
    "geometry_msgs/msg/Twist": _twist,
    "std_msgs/msg/Float64MultiArray": lambda msg: np.asarray(msg.data, np.float32),
}

"""Typed configs of the ROS 2 nodes: one source of truth for ROS parameters, YAML and docs.

Each node's parameters are a pydantic model built from the core configs (`RuntimeConfig`
with its safety limits, `StoreConfig`) plus what only ROS needs (topics, the command
adapter). `ript_ros.params` declares every field as a ROS parameter with its description
and reads them back through the model, so a bad value fails `configure` with a message
that names the parameter. The topic and adapter sections are shared by the policy node
and the sim bridge, so the two always agree on the wire format.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from ript_robot.config import (
    ConfigModel,
    DetectorConfig,
    LabelAppConfig,
    LiberoEnvConfig,
    RuntimeConfig,
    StoreConfig,
    TaskConfig,
)

TWIST_FIELDS = ("linear.x", "linear.y", "linear.z", "angular.x", "angular.y", "angular.z")


class TopicsConfig(ConfigModel):
    """Where the arm, its cameras and the operator meet the policy node (relative names remap with the namespace)."""

    cameras: list[str] = Field(default_factory=lambda: ["top"], description="camera names, as the policy knows them")
    image_topic: str = Field("camera/{camera}/image_raw", description="image topic per camera; {camera} is its name")
    image_transport: Literal["raw", "compressed"] = Field(
        "raw", description="raw: sensor_msgs/Image; compressed: CompressedImage on <image_topic>/compressed"
    )
    resize_images: bool = Field(
        False, description="resize other image sizes to the policy's input (nearest pixel) instead of refusing them"
    )
    state_source: Literal["joint_states", "ee_pose"] = Field(
        "joint_states", description="arm state from JointState positions or a PoseStamped (x y z qx qy qz qw)"
    )
    state_topic: str = Field("joint_states", description="JointState or PoseStamped topic of the arm")
    state_joints: list[str] = Field(
        default_factory=lambda: ["x", "y", "gripper"], description="joint names, in the policy's state order"
    )
    instruction_topic: str = Field("instruction", description="std_msgs/String task instruction (transient local)")
    outcome_topic: str = Field(
        "task_outcome", description="std_msgs/Bool: the task ended, with success (simulator or detector)"
    )


class CommandConfig(ConfigModel):
    """How an action becomes a command on the wire."""

    adapter: Literal["twist", "joint_trajectory"] = Field(
        "twist", description="twist: TwistStamped end-effector delta + gripper; joint_trajectory: JointTrajectory"
    )
    twist_topic: str = Field("command/twist", description="geometry_msgs/TwistStamped topic")
    twist_axes: list[str] = Field(
        default_factory=lambda: ["linear.x", "linear.y"],
        description="twist field of each leading action dimension (linear.x ... angular.z)",
    )
    twist_scale: float = Field(1.0, gt=0.0, description="twist units per action unit (m/s or rad/s per unit)")
    gripper_index: int = Field(2, ge=-1, description="action dimension of the gripper command; -1 for none")
    gripper_topic: str = Field("command/gripper", description="std_msgs/Float64 gripper command topic")
    trajectory_topic: str = Field("command/joint_trajectory", description="trajectory_msgs/JointTrajectory topic")
    joints: list[str] = Field(default_factory=list, description="joint names of the trajectory adapter's points")

    @model_validator(mode="after")
    def _check_axes(self) -> CommandConfig:
        unknown = [a for a in self.twist_axes if a not in TWIST_FIELDS]
        if unknown:
            raise ValueError(f"twist_axes {unknown} unknown; choose from {list(TWIST_FIELDS)}")
        if self.adapter == "joint_trajectory" and not self.joints:
            raise ValueError("the joint_trajectory adapter needs command.joints (one name per action dimension)")
        return self


class PolicyNodeConfig(ConfigModel):
    """The policy node: runs the shared control loop on an arm through ROS 2."""

    policy: str = Field("store", description="'store' for the store's latest published policy, or a checkpoint folder")
    robot_id: str = Field("arm-0", description="recorded with every episode")
    control_hz: float = Field(30.0, gt=0.0, le=1000.0, description="control rate, Hz; the watchdog checks at this rate")
    max_steps: int = Field(300, ge=1, description="step limit of one episode")
    frames_per_tick: int = Field(
        1, ge=1, description="frames of the first camera per control tick (2 for a 60 fps camera at 30 Hz)"
    )
    max_input_age_s: float = Field(0.1, gt=0.0, description="hold the arm when any input is older than this, seconds")
    stale_abort_s: float = Field(2.0, gt=0.0, description="end the episode as a fault after inputs stale this long, s")
    outcome_grace_s: float = Field(0.5, ge=0.0, description="after max steps, wait this long for the outcome, s")
    label_source: Literal["sim", "detector"] = Field("sim", description="who publishes the outcome topic")
    context_source: Literal["schedule", "instruction"] = Field(
        "schedule", description="schedule: claim contexts from the store; instruction: run the latched instruction"
    )
    scene: str = Field("default", description="scene name of instruction contexts (context id scene/instruction)")
    deterministic: bool = Field(False, description="mean actions (evaluation) instead of sampled ones (RIPT)")
    dry_run: bool = Field(False, description="compute commands but publish them under ~/dry_run/ only; store nothing")
    record: bool = Field(True, description="write every episode to the store")
    require_workspace: bool = Field(
        True, description="refuse to configure without a workspace calibration (runtime.safety.workspace)"
    )
    autostart: bool = Field(False, description="configure and activate at startup (no lifecycle manager)")
    poll_s: float = Field(0.5, gt=0.0, description="how often to look for new work or a new policy when idle, s")
    torch_threads: int = Field(1, ge=0, description="torch CPU threads (0: torch's default)")
    topics: TopicsConfig = Field(default_factory=TopicsConfig)
    command: CommandConfig = Field(default_factory=CommandConfig)
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig)
    store: StoreConfig = Field(default_factory=StoreConfig)


class SimBridgeConfig(ConfigModel):
    """The sim bridge: a simulated arm and cameras on the topics a real driver uses, and the operator's part."""

    task: Literal["builtin", "libero"] = Field("builtin", description="simulator behind the bridge")
    builtin: TaskConfig = Field(default_factory=TaskConfig)
    libero: LiberoEnvConfig = Field(default_factory=LiberoEnvConfig)
    control_hz: float = Field(
        30.0, gt=0.0, le=1000.0, description="simulated arm and camera rate, Hz (LIBERO renders slower on a CPU)"
    )
    policy_node: str = Field("policy", description="name of the policy node whose services and status it uses")
    auto_start: bool = Field(
        True, description="play the operator: call start once a context is set up (false: the tablet starts it)"
    )
    report_outcome: bool = Field(
        True, description="publish the simulator's success (false: as on a real arm, the tablet or detector labels)"
    )
    instruction: str = Field("", description="instruction to publish (latched) for instruction contexts; '' for none")
    topics: TopicsConfig = Field(default_factory=TopicsConfig)
    command: CommandConfig = Field(default_factory=CommandConfig)


class LabelAppNodeConfig(ConfigModel):
    """The label_app node: the tablet app, linked to the policy node over ROS 2."""

    policy_node: str = Field("policy", description="name of the policy node whose status and services the app uses")
    camera: str = Field("top", description="camera of the live view (its topic from topics.image_topic)")
    topics: TopicsConfig = Field(default_factory=TopicsConfig)
    app: LabelAppConfig = Field(default_factory=LabelAppConfig)
    store: StoreConfig = Field(default_factory=StoreConfig)
    detector: DetectorConfig = Field(default_factory=DetectorConfig)


class DetectorNodeConfig(ConfigModel):
    """The detector node: judges live frames, and ends or labels episodes when confident (auto mode)."""

    policy_node: str = Field("policy", description="name of the policy node whose episodes it judges")
    every_n_frames: int = Field(5, ge=1, description="judge every N-th frame while an episode runs")
    end_on_success: bool = Field(True, description="auto mode: end the episode once a frame is a confident success")
    topics: TopicsConfig = Field(default_factory=TopicsConfig)
    detector: DetectorConfig = Field(default_factory=DetectorConfig)

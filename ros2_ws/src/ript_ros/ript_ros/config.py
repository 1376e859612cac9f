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
        False, description="resize other image sizes to the policy's input (area interpolation) instead of refusing"
    )
    state_topic: str = Field("joint_states", description="sensor_msgs/JointState topic of the arm")
    state_joints: list[str] = Field(
        default_factory=lambda: ["x", "y", "gripper"],
        description="JointState names whose positions lead the state, in the policy's order ([] for none)",
    )
    ee_pose_topic: str = Field(
        "", description="geometry_msgs/PoseStamped end-effector pose appended to the state (x y z qx qy qz qw); '' none"
    )
    instruction_topic: str = Field("instruction", description="std_msgs/String task instruction (transient local)")
    outcome_topic: str = Field(
        "task_outcome", description="std_msgs/Bool: the task ended, with success (simulator or detector)"
    )

    @model_validator(mode="after")
    def _check_state(self) -> TopicsConfig:
        if not self.state_joints and not self.ee_pose_topic:
            raise ValueError("the state needs topics.state_joints, topics.ee_pose_topic or both")
        if len(set(self.state_joints)) != len(self.state_joints):
            raise ValueError(f"topics.state_joints {self.state_joints} names a joint twice")
        return self


class CommandConfig(ConfigModel):
    """How an action becomes a command on the wire, in the controller's own terms."""

    adapter: Literal["twist", "joint_trajectory"] = Field(
        "twist", description="twist: TwistStamped for MoveIt Servo + gripper; joint_trajectory: ros2_control JTC"
    )
    action_space: Literal["ee_delta", "joint_delta", "joint_absolute"] = Field(
        "ee_delta", description="what the policy's actions are: ee_delta (twist), joint_delta or joint_absolute (JTC)"
    )
    twist_topic: str = Field("command/twist", description="geometry_msgs/TwistStamped topic")
    twist_frame: str = Field("", description="frame_id of the twist; '' takes the workspace calibration's frame")
    twist_axes: list[str] = Field(
        default_factory=lambda: ["linear.x", "linear.y"],
        description="twist field of each leading action dimension (linear.x ... angular.z)",
    )
    twist_scale: float = Field(
        0.0, ge=0.0, description="m/s (rad/s) per action unit; 0 derives it: workspace metres_per_action x control_hz"
    )
    gripper_index: int = Field(2, ge=-1, description="action dimension of the gripper command; -1 for none")
    gripper_topic: str = Field("command/gripper", description="std_msgs/Float64 gripper command topic")
    gripper_mode: Literal["binary", "continuous"] = Field(
        "binary", description="binary: open/closed with hysteresis (no chatter); continuous: the action as is"
    )
    gripper_close_above: float = Field(0.5, description="binary: close when the gripper action rises above this")
    gripper_open_below: float = Field(-0.5, description="binary: open when the gripper action falls below this")
    gripper_open_value: float = Field(-1.0, description="binary: command sent to open the gripper")
    gripper_closed_value: float = Field(1.0, description="binary: command sent to close the gripper")
    trajectory_topic: str = Field(
        "joint_trajectory_controller/joint_trajectory", description="trajectory_msgs/JointTrajectory topic of the JTC"
    )
    trajectory_stamp: Literal["zero", "now"] = Field(
        "zero", description="header stamp: zero (the controller starts on receipt) or now"
    )
    send_chunk: bool = Field(
        False, description="send the rest of the chunk as one multi-point trajectory (time_from_start per point)"
    )
    joints: list[str] = Field(default_factory=list, description="JTC joint names, one per arm action dimension")
    joint_lower: list[float] = Field(default_factory=list, description="lower position limit per joint, rad")
    joint_upper: list[float] = Field(default_factory=list, description="upper position limit per joint, rad")
    joint_velocity: list[float] = Field(default_factory=list, description="velocity limit per joint, rad/s")
    radians_per_action: float = Field(
        0.05, gt=0.0, description="joint_delta: joint motion per action unit per step, rad"
    )

    @model_validator(mode="after")
    def _check_axes(self) -> CommandConfig:
        unknown = [a for a in self.twist_axes if a not in TWIST_FIELDS]
        if unknown:
            raise ValueError(f"twist_axes {unknown} unknown; choose from {list(TWIST_FIELDS)}")
        if self.gripper_mode == "binary" and self.gripper_open_below > self.gripper_close_above:
            raise ValueError(
                f"gripper_open_below ({self.gripper_open_below}) must not exceed gripper_close_above "
                f"({self.gripper_close_above}): the band between them is the hysteresis"
            )
        joint_space = self.action_space in ("joint_delta", "joint_absolute")
        if (self.adapter == "joint_trajectory") != joint_space:
            raise ValueError(
                f"command.action_space '{self.action_space}' does not fit adapter '{self.adapter}': "
                "twist takes ee_delta; joint_trajectory takes joint_delta or joint_absolute"
            )
        if self.adapter == "joint_trajectory":
            n = len(self.joints)
            if not n:
                raise ValueError("the joint_trajectory adapter needs command.joints (the JTC's joint names)")
            for name in ("joint_lower", "joint_upper", "joint_velocity"):
                if len(getattr(self, name)) != n:
                    raise ValueError(
                        f"command.{name} has {len(getattr(self, name))} values for {n} joints: give one per joint "
                        "(the arm's documented limits; see config/ for robot profiles)"
                    )
            bad = [j for j, lo, hi in zip(self.joints, self.joint_lower, self.joint_upper, strict=True) if lo >= hi]
            if bad or min(self.joint_velocity) <= 0:
                raise ValueError(f"command joint limits are empty or velocity limits not > 0 for {bad or self.joints}")
        return self


class TeleopConfig(ConfigModel):
    """A person taking over from the policy (`ript_ros.teleop`): a dead-man button on a Joy topic, commands from
    its axes or from a twist topic, mapped onto the leading action dimensions."""

    enabled: bool = Field(False, description="listen to a teleoperation device: its dead-man button hands over control")
    joy_topic: str = Field("joy", description="sensor_msgs/Joy topic (joy_node, spacenav's spacenav/joy)")
    deadman_button: int = Field(
        4, ge=0, description="Joy button a person holds to command the arm (4: LB on a gamepad)"
    )
    close_button: int = Field(0, ge=-1, description="Joy button that closes the gripper while held; -1 for none")
    source: Literal["joy", "twist"] = Field("joy", description="where the person's motion comes from")
    joy_axes: list[int] = Field(
        default_factory=lambda: [1, 0], description="joy: Joy axis of each leading action dimension"
    )
    twist_topic: str = Field("teleop/twist", description="twist: geometry_msgs/TwistStamped topic of the motion")
    twist_fields: list[str] = Field(
        default_factory=lambda: ["linear.x", "linear.y"], description="twist: field of each leading action dimension"
    )
    scales: list[float] = Field(
        default_factory=lambda: [1.0, 1.0], description="action units per unit of each mapped axis or field"
    )
    max_age_s: float = Field(
        0.25, gt=0.0, description="teleop messages older than this while a person commands hold the arm, s"
    )

    @model_validator(mode="after")
    def _check_mapping(self) -> TeleopConfig:
        mapped = self.joy_axes if self.source == "joy" else self.twist_fields
        if len(self.scales) != len(mapped):
            raise ValueError(f"teleop.scales has {len(self.scales)} values for {len(mapped)} mapped dimensions")
        if unknown := [f for f in self.twist_fields if f not in TWIST_FIELDS]:
            raise ValueError(f"teleop.twist_fields {unknown} unknown; choose from {list(TWIST_FIELDS)}")
        if self.close_button == self.deadman_button:
            raise ValueError("teleop.close_button and deadman_button must be different buttons")
        if min(self.joy_axes, default=0) < 0:
            raise ValueError(f"teleop.joy_axes {self.joy_axes} must be axis indices >= 0")
        return self


class ResetConfig(ConfigModel):
    """Between episodes: open the gripper, retreat, go home, and check the pose before a start."""

    enabled: bool = Field(True, description="home the arm before every episode and refuse a start away from home")
    home_joints: list[float] = Field(
        default_factory=list, description="joint_trajectory: home position per command.joints, rad"
    )
    home_position: list[float] = Field(
        default_factory=list, description="twist: home end-effector position in the workspace frame, m"
    )
    joint_tolerance: float = Field(0.02, gt=0.0, description="start refused when any joint is further from home, rad")
    position_tolerance: float = Field(0.01, gt=0.0, description="start refused when the end effector is further, m")
    retreat_m: float = Field(0.05, ge=0.0, description="twist: rise this far (+z, or the last position axis) first, m")
    speed_fraction: float = Field(
        0.2, gt=0.0, le=1.0, description="homing speed as a fraction of the joint velocity limits / full action"
    )
    timeout_s: float = Field(30.0, gt=0.0, description="homing that takes longer is a fault the operator must clear")


class PolicyNodeConfig(ConfigModel):
    """The policy node: runs the shared control loop on an arm through ROS 2."""

    policy: str = Field("store", description="'store' for the store's latest published policy, or a checkpoint folder")
    robot_id: str = Field("arm-0", description="recorded with every episode")
    control_hz: float = Field(30.0, gt=0.0, le=1000.0, description="control rate, Hz: one command per period")
    max_steps: int = Field(300, ge=1, description="step limit of one episode")
    plan_ahead_steps: int = Field(
        2, ge=0, description="start planning the next chunk this many steps before runtime.execute_steps is reached"
    )
    policy_delay_s: float = Field(0.0, ge=0.0, description="extra seconds per policy call (to try a slow VLA), s")
    max_input_age_s: float = Field(0.1, gt=0.0, description="hold the arm when any input's stamp is older than this, s")
    max_clock_skew_s: float = Field(
        0.05, ge=0.0, description="refuse inputs stamped further in the future than this (unsynced clocks), s"
    )
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
    reset: ResetConfig = Field(default_factory=ResetConfig)
    teleop: TeleopConfig = Field(default_factory=TeleopConfig)
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
    joy_topic: str = Field("joy", description="sensor_msgs/Joy the scripted operator (builtin.scripted_operator) uses")
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

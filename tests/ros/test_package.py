"""The ament package as ROS users meet it: parameters, parameter YAML, launch files, package.xml.

Launch cannot run here (no launch wheels), so these tests keep the launch files honest: every
executable they start exists, every parameter file they load exists and holds only declared
parameters that validate, and every parameter they set is declared by that node.
"""

from __future__ import annotations

import ast
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
import rclpy
import yaml
from rclpy.context import Context
from ript_ros.config import DetectorNodeConfig, LabelAppNodeConfig, PolicyNodeConfig, SimBridgeConfig
from ript_ros.params import descriptors, read
from ript_ros.policy_node import PolicyNode
from ript_ros.sim_bridge_node import SimBridgeNode
from rosutil import flatten, ros_context

from ript_robot.config import ConfigError

PACKAGE = Path(__file__).parents[2] / "ros2_ws" / "src" / "ript_ros"
MODELS = {
    "policy_node": PolicyNodeConfig,
    "sim_bridge_node": SimBridgeConfig,
    "label_app": LabelAppNodeConfig,
    "detector_node": DetectorNodeConfig,
}
NODE_MODELS = {"sim_bridge": SimBridgeConfig, "label_app": LabelAppNodeConfig, "detector": DetectorNodeConfig}
EXTERNAL_EXECUTABLES = {("realsense2_camera", "realsense2_camera_node")}


def setup_py() -> dict[str, Any]:
    """Console scripts and data files declared in setup.py (read, not run)."""
    tree = ast.parse((PACKAGE / "setup.py").read_text())
    call = next(n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "setup")
    kwargs = {k.arg: k.value for k in call.keywords}
    scripts = [ast.literal_eval(e.values[0]) if isinstance(e, ast.JoinedStr) else ast.literal_eval(e)
               for e in kwargs["entry_points"].values[0].elts]  # fmt: skip
    return {"executables": {s.split("=")[0].strip() for s in scripts}, "source": (PACKAGE / "setup.py").read_text()}


def unflatten(flat: dict[str, Any]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for dotted, value in flat.items():
        *parents, leaf = dotted.split(".")
        node = tree
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return tree


@pytest.mark.parametrize("node_class,model", [(PolicyNode, PolicyNodeConfig), (SimBridgeNode, SimBridgeConfig)])
def test_every_parameter_is_declared_with_a_description(node_class, model, tmp_path):
    names = [d.name for d in descriptors(model)]
    assert len(names) == len(set(names)) > 10
    with ros_context() as ctx:
        node = node_class(context=ctx)
        declared = node.describe_parameters(names)
        assert all(d.description for d in declared), [d.name for d in declared if not d.description]
        assert read(node, model) == model()  # the defaults read back as the model's defaults
        node.destroy_node()


def test_a_bad_parameter_value_names_the_parameter():
    from rclpy.parameter import Parameter

    with ros_context() as ctx:
        node = PolicyNode(context=ctx, parameter_overrides=[Parameter("command.twist_axes", value=["linear.w"])])
        with pytest.raises(ConfigError, match=r"(?s)parameters of node /policy.*linear\.w"):
            read(node, PolicyNodeConfig)
        node.destroy_node()


@pytest.mark.parametrize("name", sorted(p.name for p in (PACKAGE / "config").glob("*.yaml")))
def test_parameter_files_hold_only_declared_parameters_that_validate(name):
    content = yaml.safe_load((PACKAGE / "config" / name).read_text())
    ((node_name, section),) = content.items()
    model = NODE_MODELS.get(node_name, PolicyNodeConfig)
    flat = flatten(section["ros__parameters"])
    declared = {d.name for d in descriptors(model)}
    assert set(flat) <= declared, set(flat) - declared
    model.model_validate(unflatten(flat))
    # ROS parses the file with its own YAML rules (a bare y is a boolean, lists must hold one type)
    context = Context()
    rclpy.init(args=["--ros-args", "--params-file", str(PACKAGE / "config" / name)], context=context)
    context.try_shutdown()


def _launch_nodes() -> list[tuple[str, ET.Element, ET.Element]]:
    out = []
    for path in sorted((PACKAGE / "launch").glob("*.launch.xml")):
        root = ET.parse(path).getroot()
        out += [(path.name, root, node) for node in root.iter("node")]
    return out


def test_launch_files_start_existing_executables_with_existing_files_and_declared_parameters():
    setup = setup_py()
    nodes = _launch_nodes()
    assert {name for name, _, _ in nodes} == {"robot.launch.xml", "sim.launch.xml", "sim_libero.launch.xml"}
    for launch, root, node in nodes:
        pkg, exe = node.get("pkg"), node.get("exec")
        args = {a.get("name") for a in root.iter("arg")}
        used = set(re.findall(r"\$\(var (\w+)\)", ET.tostring(root, encoding="unicode")))
        assert used <= args, f"{launch} uses undeclared args {used - args}"
        if pkg != "ript_ros":
            assert (pkg, exe) in EXTERNAL_EXECUTABLES, f"{launch}: unknown executable {pkg}/{exe}"
            continue
        assert exe in setup["executables"], f"{launch}: {exe} is not a console script of ript_ros"
        declared = {d.name for d in descriptors(MODELS[exe])}
        defaults = {a.get("name"): a.get("default", "") for a in root.iter("arg")}
        for param in node.iter("param"):
            if param.get("from"):
                relative = param.get("from").replace("$(find-pkg-share ript_ros)/", "")
                relative = re.sub(r"\$\(var (\w+)\)", lambda m, d=defaults: d[m.group(1)], relative)
                assert (PACKAGE / relative).is_file(), f"{launch}: {relative} missing"
                assert relative.startswith("config/") and 'glob("config/*.yaml")' in setup["source"]
            else:
                assert param.get("name") in declared, f"{launch}: {exe} declares no parameter {param.get('name')}"
        for arg in root.iter("arg"):
            default = arg.get("default", "")
            if default.startswith("$(find-pkg-share ript_ros)/config/"):
                name = default.rsplit("/", 1)[1]
                installed = (PACKAGE / "config" / name).is_file() or f"calibration/{name}" in setup["source"]
                assert installed, (
                    f"{launch}: arg {arg.get('name')} points at {name}, which the package does not install"
                )


def test_the_robot_launch_requires_a_workspace_and_keeps_limits_on():
    root = ET.parse(PACKAGE / "launch" / "robot.launch.xml").getroot()
    workspace = next(a for a in root.iter("arg") if a.get("name") == "workspace")
    assert workspace.get("default") is None  # no calibration, no launch
    robot = yaml.safe_load((PACKAGE / "config" / "policy_node.yaml").read_text())["policy"]["ros__parameters"]
    assert robot["require_workspace"] is True and robot["runtime"]["safety"]["enabled"] is True


def test_package_xml_declares_every_message_package_the_nodes_import():
    imported = set()
    for module in (PACKAGE / "ript_ros").glob("*.py"):
        imported |= set(re.findall(r"^from (\w+)\.(?:msg|srv) import", module.read_text(), re.M))
    depends = {e.text for e in ET.parse(PACKAGE / "package.xml").getroot().iter("exec_depend")}
    assert imported <= depends, imported - depends
    assert (PACKAGE / "resource" / "ript_ros").is_file()

"""ament_python package ript_ros: `colcon build` on a ROS workstation, or `pip install` anywhere."""

from glob import glob

from setuptools import setup

PACKAGE = "ript_ros"

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=[PACKAGE],
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.xml")),
        # the simulated arm's workspace lives with the other calibrations, in the repository's calibration/
        (f"share/{PACKAGE}/config", [*glob("config/*.yaml"), "../../../calibration/sim_pick_workspace.yaml"]),
    ],
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="ript-robot",
    maintainer_email="team@ript-robot.dev",
    description="ript-robot on ROS 2: the policy, sim bridge, label app and detector nodes, launch files, parameters",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            f"policy_node = {PACKAGE}.policy_node:main",
            f"sim_bridge_node = {PACKAGE}.sim_bridge_node:main",
            f"label_app = {PACKAGE}.label_app_node:main",
            f"detector_node = {PACKAGE}.detector_node:main",
        ],
        # the tablet app's link to the policy node (`ript label-app label_app.robot=ros`)
        "ript_robot.robot_links": [f"ros = {PACKAGE}.label_link:RosRobotLink"],
    },
)

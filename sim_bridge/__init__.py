"""Simulators behind `RobotEnv`: batched rollouts and the in-process main job on the built-in task."""

"""ript-robot: interactive post-training (RIPT) of VLA robot policies, on real arms and in simulation."""

__version__ = "0.1.0"

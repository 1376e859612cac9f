"""ript_ros: thin ROS 2 nodes around the ript-robot core (the policy node and the sim bridge node)."""

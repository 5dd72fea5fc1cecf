"""The plan wing (pure, no root): scenario, orbits, topology, routing, the planner, golden."""

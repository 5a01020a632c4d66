"""Experiments around a measurement: stress loads during a run, and where its stream logs are written.

``parse_stress`` and ``check_tools`` / ``check_plan`` validate ``--stress``
specs before anything is set up (a campaign planner calls them too);
``StressCapture`` runs the loads during a run and ``LogFs`` gives the
stream logs a directory or a file system of their own.
"""

from latscope.experiment.spec import StressSpec, check_plan, check_tools, parse_stress

__all__ = ["StressSpec", "check_plan", "check_tools", "parse_stress"]

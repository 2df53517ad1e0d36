"""Failure drills (``python -m drill run``): scenarios, the runner, the report and timeline.

Also the drill's own task module (``drill.tasks``, loaded into the image's worker from outside
the image) and the seed's 2018 app, kept for the side-by-side comparison.
"""

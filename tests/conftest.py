"""Settings both test tiers share.

Hypothesis's per-example deadline is a timed assertion: on a loaded machine
(CI runs the suite beside other work) it fails tests that are only slow.  So
are its too-slow and data-too-large health checks, which count how much work
generating examples took: they failed the package build's unit run on a busy
machine.  Speed is measured in bench/, as ratios within one run, never
asserted here.
"""

from hypothesis import HealthCheck, settings

settings.register_profile(
    "s3relay",
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile("s3relay")

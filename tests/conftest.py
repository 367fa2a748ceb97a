"""Settings both test tiers share.

Hypothesis's per-example deadline is a timed assertion: on a loaded machine
(CI runs the suite beside other work) it fails tests that are only slow.
Speed is measured in bench/, as ratios within one run, never asserted here.
"""

from hypothesis import settings

settings.register_profile("s3relay", deadline=None)
settings.load_profile("s3relay")

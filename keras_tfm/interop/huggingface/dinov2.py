"""Placeholder for the `dinov2` family (issue #29): its writer replaces this
module with the family's declaration."""

FAMILIES = ()

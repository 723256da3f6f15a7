"""Placeholder for the `deberta_v2` family (issue #29): its writer replaces this
module with the family's declaration."""

FAMILIES = ()

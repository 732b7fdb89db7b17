"""Tier one, tier two, the rule fallback, TreeSHAP, and the artifact folders they load from."""

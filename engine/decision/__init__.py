"""The cascade (tier one, tier two or the rule fallback), the policy, reasons and decisions."""

"""Case text per language for the case simulator: `en` and `de`, the same tables in each."""

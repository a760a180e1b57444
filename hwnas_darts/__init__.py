"""hwnas_darts."""

"""Entry points for `ray job submit -- python -m jobs.<name>`; each is a thin shell over qmlops."""

"""Independent, scalar reference implementations that the package's vectorised code is tested
against (they ship with the tests, not with the package)."""

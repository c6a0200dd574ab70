"""distill's test suite, one folder per package of distill/ (tests/select/ tests distill/select/, …); tests/cli/
tests the top-level modules (the command line and its commands), tests/project/ the repository as a whole (docs,
layout, install, scripts). A package, so test files in different folders may share a basename and import the
shared helpers here as `tests.clusters`, `tests.cli_helpers` and `tests.docs_drift` (tests/project/test_layout.py
keeps the folders to this list)."""

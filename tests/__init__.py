"""scorefleet's tests, by kind (unit/, integration/, e2e/, deploy/); shared fixtures in conftest.py, shared helpers in helpers/."""

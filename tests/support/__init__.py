"""Helpers shared by the test suites: real service harnesses and small utilities."""

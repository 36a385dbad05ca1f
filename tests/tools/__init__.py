"""Helpers of the tests that are not part of the package (tests/tools/browser.py: the report
opened in headless Chromium)."""

"""The prepared data in use: queries over a study's scans."""

"""The model catalog: entries, fetching by URL or mirror with sha256, label files."""

"""``edged demo``: the daemon on sample media, with a local broker of its own."""

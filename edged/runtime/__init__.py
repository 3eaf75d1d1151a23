"""The running graph: sources and the per-pipeline threads, their publish policy and stage failures."""

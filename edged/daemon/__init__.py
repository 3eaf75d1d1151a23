"""The daemon process: wiring of the stages (App), pre-flight checks, sd_notify."""

"""The deploy stage: the Ansible role converged into a Debian root that boots with systemd."""

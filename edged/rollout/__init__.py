"""Model rollout over MQTT: fetch, evaluate against the pipeline's bar, switch, watch, roll back.

docs/rollout.md describes the protocol; :mod:`edged.rollout.policy` holds
the decisions (pure functions), :mod:`edged.rollout.manager` the steps.
"""

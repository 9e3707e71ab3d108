"""The ground floor: errors, settings, the database base, the event contract, Redis keys,
metrics and the RESP client. It imports nothing of ours from above."""

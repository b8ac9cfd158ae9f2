"""The status service's use cases: `projector` folds the topics into the view, `jobs` reads a
job (with read-your-writes), `commands` forwards cancel and reschedule to the release owner."""

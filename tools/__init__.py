"""Developer tooling that no service imports at run time: the generators of the published event
documents (`python -m tools.asyncapi`, `python -m tools.schema_doc`, or `make docs`)."""

"""Queries behind the REST API: one module per resource, keyword-only, one function per question."""

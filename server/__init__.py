"""WardWatch server: ingest, storage, escalation and the command-center interfaces."""

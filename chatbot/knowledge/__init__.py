"""Knowledge: reading and validating the knowledge sources (FAQ and dialogue files) into
``Document`` records whose ids are content hashes (``ingest``)."""

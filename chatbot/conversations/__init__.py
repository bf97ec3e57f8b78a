"""The conversation log: engine, ORM models, read models (``views``), read queries
(``queries``), the ``ChatService`` that runs and logs every round trip, and background jobs."""

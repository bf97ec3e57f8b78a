"""The HTTP edge: the app factory (``app``), a router per resource (``chat``, ``admin``,
``openai_compat``), their dependencies (``deps``), request and web-only bodies (``schemas``),
SSE streaming (``sse``), error mapping (``errors``) and rate limits (``ratelimit``)."""

"""`dept serve`: many adapters behind one frozen model over HTTP, batched across adapters.

    schemas.py  request and response models (OpenAI's shapes for completions and models)
    adapters.py the adapters the server holds, each with its task and input rules
    decode.py   generation one token at a time over a shared KV cache; finished rows leave
    engine.py   the one worker that owns the model: a bounded queue, batches across adapters
    app.py      FastAPI routes, auth, limits, metrics
"""
